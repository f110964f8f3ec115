"""JSON Schema validation of golfbench's records (jsonschema, Draft 2020-12), one schema per record kind in
harness/schemas/, shared by the code that writes a record and the code that checks it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KINDS = ("result", "submission", "imported")


@cache
def validator(kind: str) -> Draft202012Validator:
    """The compiled validator for ``kind`` (result | submission | imported); the schema itself is checked first."""
    schema = json.loads((SCHEMAS / f"{kind}.schema.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def load(kind: str) -> dict:
    """The schema document for ``kind``."""
    return validator(kind).schema


def errors(kind: str, obj, root: str = "") -> list[str]:
    """Every problem with ``obj`` as a record of ``kind``, one readable line each, in a stable order.

    Lines read "<path>: missing required field 'x'", "<path>: expected number, got str", or jsonschema's own
    message; <path> is ``root`` followed by the JSON path (e.g. "submission.seed_results.0.val_bpb").
    """
    out = []
    for err in sorted(validator(kind).iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message)):
        where = ".".join([root, *map(str, err.absolute_path)]).strip(".")
        if err.validator == "required":
            missing = err.message.split("'")[1] if "'" in err.message else err.message
            out.append(f"{where}: missing required field '{missing}'".lstrip(": "))
        elif err.validator == "type":
            want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
            out.append(f"{where}: expected {' or '.join(want)}, got {type(err.instance).__name__}")
        elif err.validator == "additionalProperties":
            out.append(f"{where}: unexpected field ({err.message})".lstrip(": "))
        else:
            out.append(f"{where}: {err.message}".lstrip(": "))
    return out
