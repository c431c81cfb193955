"""A Pinecone index on 127.0.0.1 for the tests, speaking the data plane of API version
2025-10 and checking every request and every response against Pinecone's published
OpenAPI description (``tests/vendor/pinecone_db_data_2025-10.oas.yaml``).

No Pinecone server runs on these machines (Pinecone Local is a container image), so
the plugin is tested against this: a request that does not follow the description is
answered 400 and kept in :attr:`PineconeIndex.problems`, which the tests assert empty;
a response that would not follow it is kept there too. Records live in memory, per
namespace; filters follow Pinecone's metadata filter language (an array field matches
when any of its items does); a sparse-dense query scores by dot product."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SPEC_PATH = Path(__file__).parent / "vendor" / "pinecone_db_data_2025-10.oas.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text())
VERSION = str(SPEC["info"]["version"])
_REGISTRY = Registry().with_resource(
    "urn:pinecone", Resource.from_contents(SPEC, default_specification=DRAFT4)
)


def _schema_problem(schema: dict[str, Any], instance: Any) -> str | None:
    """What is wrong with ``instance`` against ``schema`` (its ``$ref`` s into the
    description); None when fine."""
    validator = OAS30Validator(_rebased(schema), registry=_REGISTRY)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    if not errors:
        return None
    return "; ".join(f"{'/'.join(map(str, e.path)) or '(body)'}: {e.message}" for e in errors)


def _rebased(schema: Any) -> Any:
    """``schema`` with its references pointed into the registered description."""
    if isinstance(schema, dict):
        return {k: ("urn:pinecone" + v if k == "$ref" else _rebased(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_rebased(v) for v in schema]
    return schema


class BadRequest(Exception):
    """A request Pinecone would refuse: answered with this status and message."""

    def __init__(self, message: str, status: int = 400, code: int = 3) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def matches(metadata: dict[str, Any], condition: dict[str, Any]) -> bool:
    """Whether a record's metadata passes a Pinecone metadata filter."""
    for key, wanted in condition.items():
        if key == "$and":
            if not all(matches(metadata, c) for c in wanted):
                return False
            continue
        if key == "$or":
            if not any(matches(metadata, c) for c in wanted):
                return False
            continue
        if key.startswith("$"):
            raise BadRequest(f"unknown top-level operator {key}")
        value = metadata.get(key)
        values = value if isinstance(value, list) else [value]
        for op, arg in (wanted if isinstance(wanted, dict) else {"$eq": wanted}).items():
            if op == "$eq":
                ok = arg in values
            elif op == "$ne":
                ok = arg not in values
            elif op == "$in":
                ok = any(v in arg for v in values)
            elif op == "$nin":
                ok = not any(v in arg for v in values)
            elif op == "$exists":
                ok = (key in metadata) == bool(arg)
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                if not isinstance(value, int | float):
                    return False
                ok = {"$gt": value > arg, "$gte": value >= arg, "$lt": value < arg,
                      "$lte": value <= arg}[op]  # fmt: skip
            else:
                raise BadRequest(f"unknown operator {op} in filter on {key}")
            if not ok:
                return False
    return True


class PineconeIndex:
    """One index (its host is the server's URL): ``dimension``, ``metric``, the key it
    accepts, the namespaces and their records."""

    def __init__(self, dimension: int, *, metric: str = "dotproduct",
                 api_key: str = "pc-test-key", field: str | None = None) -> None:  # fmt: skip
        self.dimension, self.metric, self.api_key = dimension, metric, api_key
        #: an index with integrated embedding embeds this field of each record (a
        #: stand-in for a hosted model: words hashed into ``dimension`` dimensions)
        self.field = field
        self.namespaces: dict[str, dict[str, dict[str, Any]]] = {}
        #: every way a request or a response left the published description
        self.problems: list[str] = []
        #: (operation, status) of every request answered
        self.calls: list[tuple[str, int]] = []

    def app(self) -> Starlette:
        """The index's HTTP API."""
        handlers = {
            "upsertVectors": self._upsert, "queryVectors": self._query,
            "deleteVectors": self._delete, "describeIndexStats": self._describe_index_stats,
            "fetchVectorsByMetadata": self._fetch_by_metadata,
            "upsertRecordsNamespace": self._upsert_records,
            "searchRecordsNamespace": self._search_records,
        }  # fmt: skip
        routes = []
        for path, item in SPEC["paths"].items():
            operation = item["post"]
            handler = handlers[operation["operationId"]]
            routes.append(Route(path, self._endpoint(operation, handler), methods=["POST"]))
        return Starlette(routes=routes)

    def _endpoint(self, operation: dict[str, Any], handler: Any) -> Any:
        ((kind, content),) = operation["requestBody"]["content"].items()
        responses = operation["responses"]

        async def endpoint(request: Request) -> Response:
            name = operation["operationId"]
            try:
                version = request.headers.get("x-pinecone-api-version")
                if version != VERSION:
                    raise BadRequest(f"X-Pinecone-Api-Version must be {VERSION}: {version!r}")
                if request.headers.get("api-key") != self.api_key:
                    raise BadRequest("Invalid API Key", status=401, code=16)
                raw = await request.body()
                try:
                    if kind == "application/x-ndjson":
                        body = [json.loads(line) for line in raw.splitlines() if line.strip()]
                    else:
                        body = json.loads(raw or b"null")
                except ValueError as exc:
                    raise BadRequest(f"the body is not {kind}: {exc}") from None
                wrong = _schema_problem(content["schema"], body)
                if wrong is not None:
                    raise BadRequest(f"{name}: {wrong}")
                status, payload = handler(body, **request.path_params)
            except BadRequest as exc:
                if exc.status == 400:
                    self.problems.append(f"{name} request: {exc}")
                status, payload = exc.status, {"code": exc.code, "message": str(exc)}
            answer = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
            if "content" in answer:
                wrong = _schema_problem(answer["content"]["application/json"]["schema"], payload)
                if wrong is not None:
                    self.problems.append(f"{name} response: {wrong}")
            elif payload is not None:
                self.problems.append(f"{name} response: a body where the description has none")
            self.calls.append((name, status))
            if payload is None:
                return Response(status_code=status)
            return JSONResponse(payload, status_code=status)

        return endpoint

    def _records(self, body: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return self.namespaces.setdefault(body.get("namespace", ""), {})

    def _upsert(self, body: dict[str, Any]) -> tuple[int, Any]:
        records = self._records(body)
        for vector in body["vectors"]:
            if len(vector.get("values", [])) != self.dimension:
                raise BadRequest(f"Vector dimension {len(vector.get('values', []))} does not"
                                 f" match the dimension of the index {self.dimension}")  # fmt: skip
            if "sparseValues" in vector and self.metric != "dotproduct":
                raise BadRequest("Sparse vectors are only supported for dotproduct indexes")
            records[vector["id"]] = vector
        return 200, {"upsertedCount": len(body["vectors"])}

    def _query(self, body: dict[str, Any]) -> tuple[int, Any]:
        vector = body.get("vector") or []
        if len(vector) != self.dimension:
            raise BadRequest(f"Vector dimension {len(vector)} does not match the dimension of"
                             f" the index {self.dimension}")  # fmt: skip
        sparse = body.get("sparseVector")
        if sparse is not None and self.metric != "dotproduct":
            raise BadRequest("Sparse vectors are only supported for dotproduct indexes")
        where = body.get("filter") or {}
        scored = []
        for record in self._records(body).values():
            if not matches(record.get("metadata") or {}, where):
                continue
            score = _similarity(vector, record["values"], self.metric)
            if sparse is not None and "sparseValues" in record:
                held = dict(zip(record["sparseValues"]["indices"],
                                record["sparseValues"]["values"], strict=True))  # fmt: skip
                pairs = zip(sparse["indices"], sparse["values"], strict=True)
                score += sum(held.get(i, 0.0) * v for i, v in pairs)
            scored.append((score, record))
        scored.sort(key=lambda pair: -pair[0])
        found = []
        for score, record in scored[: body["topK"]]:
            match: dict[str, Any] = {"id": record["id"], "score": score}
            if body.get("includeMetadata"):
                match["metadata"] = record.get("metadata") or {}
            if body.get("includeValues"):
                match["values"] = record["values"]
            found.append(match)
        return 200, {"matches": found, "namespace": body.get("namespace", ""),
                     "usage": {"readUnits": 1 + len(scored) // 1000}}  # fmt: skip

    def _delete(self, body: dict[str, Any]) -> tuple[int, Any]:
        records = self._records(body)
        ways = [bool(body.get("ids")), bool(body.get("deleteAll")), "filter" in body]
        if sum(ways) != 1:
            raise BadRequest("delete takes exactly one of ids, deleteAll and filter")
        if body.get("deleteAll"):
            records.clear()
        for key in body.get("ids") or []:
            records.pop(key, None)
        if "filter" in body:
            for key in [k for k, r in records.items() if matches(r.get("metadata") or {},
                                                                 body["filter"])]:  # fmt: skip
                del records[key]
        return 200, {}

    def _describe_index_stats(self, body: dict[str, Any]) -> tuple[int, Any]:
        counts = {name: {"vectorCount": len(r)} for name, r in self.namespaces.items() if r}
        return 200, {"namespaces": counts, "dimension": self.dimension, "indexFullness": 0.0,
                     "totalVectorCount": sum(c["vectorCount"] for c in counts.values()),
                     "metric": self.metric, "vectorType": "dense"}  # fmt: skip

    def _fetch_by_metadata(self, body: dict[str, Any]) -> tuple[int, Any]:
        where = body.get("filter") or {}
        chosen = [r for r in self._records(body).values()
                  if matches(r.get("metadata") or {}, where)]  # fmt: skip
        start = int(base64.b64decode(body["paginationToken"])) if "paginationToken" in body else 0
        limit = body.get("limit", 100)
        page = chosen[start : start + limit]
        answer: dict[str, Any] = {"vectors": {r["id"]: r for r in page},
                                  "namespace": body.get("namespace", ""),
                                  "usage": {"readUnits": 1}}  # fmt: skip
        if start + limit < len(chosen):
            answer["pagination"] = {"next": base64.b64encode(str(start + limit).encode()).decode()}
        return 200, answer

    def _upsert_records(self, body: list[dict[str, Any]], namespace: str) -> tuple[int, Any]:
        """Records embedded by the index (its integrated model) from their mapped field."""
        if self.field is None:
            raise BadRequest("Integrated inference is not configured for this index")
        records = self.namespaces.setdefault(namespace, {})
        for record in body:
            if not isinstance(record.get(self.field), str):
                raise BadRequest(f"Missing field {self.field!r} in record {record['_id']!r}")
            metadata = {k: v for k, v in record.items() if k not in ("_id", "id")}
            vector = stand_in(record[self.field], self.dimension)
            records[record["_id"]] = {"id": record["_id"], "metadata": metadata, "values": vector}
        return 201, None

    def _search_records(self, body: dict[str, Any], namespace: str) -> tuple[int, Any]:
        """Records nearest to the query text, embedded by the index's model."""
        if self.field is None:
            raise BadRequest("Integrated inference is not configured for this index")
        query = body["query"]
        text = (query.get("inputs") or {}).get("text")
        if not isinstance(text, str):
            raise BadRequest("query.inputs.text is required for an index with integrated embedding")
        vector = stand_in(text, self.dimension)
        where = query.get("filter") or {}
        scored = sorted(
            ((_similarity(vector, r["values"], self.metric), r)
             for r in self.namespaces.get(namespace, {}).values()
             if matches(r.get("metadata") or {}, where)),
            key=lambda pair: -pair[0],
        )[: query["top_k"]]  # fmt: skip
        wanted = body.get("fields") or ["*"]
        hits = [{"_id": r["id"], "_score": score,
                 "fields": {k: v for k, v in (r.get("metadata") or {}).items()
                            if "*" in wanted or k in wanted}}
                for score, r in scored]  # fmt: skip
        usage = {"read_units": 1, "embed_total_tokens": len(text.split())}
        return 200, {"result": {"hits": hits}, "usage": usage}


def _similarity(a: list[float], b: list[float], metric: str) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    if metric == "dotproduct":
        return dot
    if metric == "cosine":
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        return dot / norms if norms else 0.0
    return -math.dist(a, b)  # euclidean: nearer is higher


def stand_in(text: str, dimension: int) -> list[float]:
    """The stand-in hosted model: the text's words hashed into ``dimension`` dimensions,
    at unit length."""
    import hashlib
    import re

    vector = [0.0] * dimension
    for word in re.findall(r"\w+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "big") % dimension] += 1
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
