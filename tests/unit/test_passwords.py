"""Password hashes: scrypt with a random salt and its parameters stored in the hash."""

import base64
import hashlib

from easysmart.auth import hash_password, verify_password


def test_a_password_verifies_against_its_own_hash():
    stored = hash_password("s3cret-pass")

    assert verify_password("s3cret-pass", stored)


def test_a_wrong_password_does_not_verify():
    stored = hash_password("s3cret-pass")

    assert not verify_password("s3cret-pasS", stored)
    assert not verify_password("", stored)


def test_the_same_password_hashes_differently_each_time():
    first, second = hash_password("same"), hash_password("same")

    assert first != second
    assert first.split("$")[4] != second.split("$")[4]  # the salt


def test_the_hash_names_scrypt_and_its_parameters():
    scheme, n, r, p, salt, key = hash_password("pw").split("$")

    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(key)) == 32


def test_a_hash_made_with_other_parameters_still_verifies():
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(b"older", salt=salt, n=2**10, r=4, p=2, dklen=24)
    stored = f"scrypt${2**10}$4$2${base64.b64encode(salt).decode()}${base64.b64encode(key).decode()}"

    assert verify_password("older", stored)
    assert not verify_password("newer", stored)


def test_malformed_or_foreign_hashes_never_match():
    for stored in (
        "",
        "plain-text",
        "bcrypt$2b$12$abc",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$16384$8$1$!!!$AAAA",
        "scrypt$16385$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",
        "md5$1$2$3$4$5",
    ):
        assert not verify_password("anything", stored), stored


def test_non_ascii_passwords_round_trip():
    stored = hash_password("senha-çã-❄")

    assert verify_password("senha-çã-❄", stored)
    assert not verify_password("senha-ca-❄", stored)
