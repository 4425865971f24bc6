"""Structural checks: a JSON value against an SDK model (auth0-python's pydantic types) or a
discovery-document schema (Google). Both return a list of problems, each naming the JSON path;
an empty list means the value matches. Unknown fields are problems: the SDK models accept extra
fields (``extra="allow"``) and the discovery client ignores them, so a simulator that invents a
field would otherwise pass unseen.
"""

import datetime as dt
import enum
import re
import types
import typing

import pydantic

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DURATION = re.compile(r"^-?\d+(\.\d{1,9})?s$")


# ---------------------------------------------------------------- auth0-python (pydantic) models

def _aliases(model):
    """Wire name -> field annotation of a pydantic v2 model."""
    out = {}
    for name, field in model.model_fields.items():
        out[field.alias or name] = field.annotation
    return out


def _strip(annotation):
    """Unwraps Annotated[...] and returns (origin, args)."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation, typing.get_origin(annotation), typing.get_args(annotation)


def check_model(value, annotation, path="$"):
    """Problems of `value` against the type `annotation` (a model, List[...], Optional, ...)."""
    annotation, origin, args = _strip(annotation)
    if annotation is typing.Any:
        return []
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        # The SDK's enums are open (`Union[Literal["user", "group"], Any]`, so a new value from
        # Auth0 does not break old clients); the simulator must use a listed value.
        if typing.Any in options and any(typing.get_origin(a) is typing.Literal for a in options):
            options = [a for a in options if a is not typing.Any]
        if value is None:
            return [] if len(options) < len(args) else [f"{path}: null is not allowed"]
        if len(options) == 1:
            return check_model(value, options[0], path)
        results = [check_model(value, a, path) for a in options]
        if any(not r for r in results):
            return []
        return [f"{path}: matches none of {[getattr(a, '__name__', str(a)) for a in options]}: "
                + "; ".join(min(results, key=len))]
    if origin is typing.Literal:
        return [] if value in args else [f"{path}: {value!r} is not one of {list(args)}"]
    if origin in (list, typing.List, typing.Sequence):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        out = []
        for i, item in enumerate(value):
            out += check_model(item, args[0] if args else typing.Any, f"{path}[{i}]")
        return out
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            return [f"{path}: expected an object, got {type(value).__name__}"]
        out = []
        for k, v in value.items():
            out += check_model(v, args[1] if len(args) > 1 else typing.Any, f"{path}.{k}")
        return out
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({annotation.__name__}), got {type(value).__name__}"]
        fields = _aliases(annotation)
        out = []
        for k, v in value.items():
            if k not in fields:
                out.append(f"{path}.{k}: not a field of {annotation.__name__} (fields: {sorted(fields)})")
            else:
                out += check_model(v, fields[k], f"{path}.{k}")
        for name, field in annotation.model_fields.items():
            if field.is_required() and (field.alias or name) not in value:
                out.append(f"{path}: missing required field {field.alias or name} of {annotation.__name__}")
        return out
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = [m.value for m in annotation]
        return [] if value in allowed else [f"{path}: {value!r} is not one of {annotation.__name__} {allowed}"]
    if annotation is bool:
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if annotation in (int, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    if annotation is str:
        return [] if isinstance(value, str) else [f"{path}: expected a string, got {value!r}"]
    if annotation in (dt.datetime, dt.date):
        ok = isinstance(value, str) and _RFC3339.match(value)
        return [] if ok else [f"{path}: expected an ISO 8601 date-time, got {value!r}"]
    # Anything else (a scalar alias the SDK defines as a plain type): let pydantic judge.
    try:
        pydantic.TypeAdapter(annotation).validate_python(value)
        return []
    except pydantic.ValidationError as e:
        return [f"{path}: {e.errors()[0]['msg']}"]


# ----------------------------------------------------------------- Google discovery documents

_INT64 = re.compile(r"^-?\d+$")


def check_schema(value, schema, doc, path="$"):
    """Problems of `value` against a discovery-document schema (a dict with `$ref`, `type`, ...)."""
    if "$ref" in schema:
        name = schema["$ref"]
        return check_schema(value, doc["schemas"][name], doc, path)
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected an object ({schema.get('id', 'object')}), got {type(value).__name__}"]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = []
        for k, v in value.items():
            if k in props:
                out += check_schema(v, props[k], doc, f"{path}.{k}")
            elif extra is not None:
                out += check_schema(v, extra, doc, f"{path}.{k}")
            else:
                out.append(f"{path}.{k}: not a property of {schema.get('id', 'this object')} "
                           f"(properties: {sorted(props)})")
        return out
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected an array, got {type(value).__name__}"]
        out = []
        for i, item in enumerate(value):
            out += check_schema(item, schema.get("items", {}), doc, f"{path}[{i}]")
        return out
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: expected a boolean, got {value!r}"]
    if kind == "integer":
        fmt = schema.get("format")
        if fmt in ("int64", "uint64"):
            # proto3 JSON: 64-bit integers are strings (numbers are accepted on input only).
            ok = isinstance(value, str) and _INT64.match(value)
            return [] if ok else [f"{path}: expected an {fmt} as a decimal string, got {value!r}"]
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r}"]
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    if kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected a string, got {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{path}: {value!r} is not one of {schema['enum']}"]
        fmt = schema.get("format")
        if fmt == "google-datetime" and not _RFC3339.match(value):
            return [f"{path}: {value!r} is not an RFC 3339 timestamp"]
        if fmt == "google-duration" and not _DURATION.match(value):
            return [f"{path}: {value!r} is not a duration such as '300s'"]
        if fmt == "byte":
            import base64
            try:
                base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_" if ("-" in value or "_" in value) else None, validate=True)
            except Exception:
                return [f"{path}: {value!r} is not base64 (format byte)"]
        return []
    if kind == "any" or kind is None:
        return []
    return [f"{path}: schema type {kind!r} is not understood by the checker"]
