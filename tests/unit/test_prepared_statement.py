"""PreparedStatement: what it sends to prepare and to execute a statement written with %(name)s parameters."""

from __future__ import annotations

import pytest

from easysmart.db import PreparedStatement


def test_parameters_are_numbered_in_order_of_first_use_and_typed():
    statement = PreparedStatement(
        "numbered", "SELECT a FROM t WHERE b = %(b)s AND c = ANY(%(c)s) AND d = %(b)s", c="bigint[]", b="uuid"
    )

    assert (
        statement.definition
        == "PREPARE numbered (uuid, bigint[]) AS SELECT a FROM t WHERE b = $1 AND c = ANY($2) AND d = $1"
    )
    assert statement.call == "EXECUTE numbered (%(b)s::uuid, %(c)s::bigint[])"


def test_a_literal_percent_reaches_the_server_once():
    statement = PreparedStatement("percent", "SELECT %(p)s LIKE 'a%%'", p="text")

    assert statement.definition == "PREPARE percent (text) AS SELECT $1 LIKE 'a%'"
    assert statement.text == "SELECT %(p)s LIKE 'a%%'"  # run with parameters, as psycopg2 reads it


def test_a_statement_without_parameters():
    statement = PreparedStatement("constant", "SELECT 1")

    assert (statement.definition, statement.call) == ("PREPARE constant AS SELECT 1", "EXECUTE constant")


@pytest.mark.parametrize("types", [{}, {"p": "text", "q": "text"}])
def test_every_parameter_needs_a_type_and_every_type_a_parameter(types):
    with pytest.raises(ValueError, match="parameters"):
        PreparedStatement("untyped", "SELECT %(p)s", **types)


def test_a_name_belongs_to_one_statement():
    PreparedStatement("test_unit_named", "SELECT 1")
    PreparedStatement("test_unit_named", "SELECT 1")  # the same statement again: a module reloaded

    with pytest.raises(ValueError, match="test_unit_named"):
        PreparedStatement("test_unit_named", "SELECT 2")
