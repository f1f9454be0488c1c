"""The package's exceptions share one root, and what the web layer answers and keeps of a request."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import orjson

import easysmart
from easysmart.errors import BadRequestError, EasySmartError, UnavailableError
from easysmart.web import error_response, request_id_of

# Their modules (settings, the cron and JSON parsers) are being reworked; each joins the root there.
_NOT_YET_UNDER_THE_ROOT = {"ConfigError", "CronError", "MalformedJsonError", "WindowExhausted"}


def test_every_exception_the_package_defines_derives_from_easysmarterror():
    defined = {}
    for module_info in pkgutil.walk_packages(easysmart.__path__, "easysmart."):
        module = importlib.import_module(module_info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                defined[f"{module.__name__}.{name}"] = value

    outside = sorted(
        path
        for path, kind in defined.items()
        if not issubclass(kind, EasySmartError) and kind.__name__ not in _NOT_YET_UNDER_THE_ROOT
    )

    assert "easysmart.accounts.AccountError" in defined and "easysmart.payload.ReadingRejected" in defined
    assert outside == []


def test_a_backing_service_failure_answers_what_failed_and_never_why():
    error = UnavailableError(
        "the object store did not store the upload: HTTPConnectionPool(host='10.0.0.7', port=9000)"
    )

    answer = error_response(error)

    assert answer.status_code == 503
    assert orjson.loads(answer.get_data())["message"] == "the object store did not store the upload"
    assert "10.0.0.7" not in answer.get_data(as_text=True)
    # A client's own mistake is answered whole: it says where.
    assert (
        BadRequestError("$[0].sensor[3].value: not a number").to_body()["message"]
        == "$[0].sensor[3].value: not a number"
    )


def test_a_client_s_request_id_is_kept_only_when_short_printable_ascii():
    assert request_id_of("ha-4f1c:upload.17") == "ha-4f1c:upload.17"
    for unusable in (None, "", "with space", "é", "x" * 129, "line\nbreak"):
        made = request_id_of(unusable)
        assert made != unusable and len(made) == 32
