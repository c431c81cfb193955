"""A Weaviate on 127.0.0.1 for the tests: its REST API checked against Weaviate's
published Swagger description and its gRPC API parsed by Weaviate's published protos
(v1.39.0, vendored in ``tests/vendor/weaviate_1.39.0``, compiled here with
``grpcio-tools`` into a pool of their own, apart from the client's copies).

No Weaviate runs on these machines (its embedded mode downloads a binary at run time),
so the plugin is tested against this. A request that leaves the description (a
field the protos do not have, a body the Swagger schema refuses, a missing header)
is answered with an error and kept in :attr:`Weaviate.problems`, which the tests
assert empty; a response that would leave it is kept there too. Collections live in
memory; filters and hybrid search follow Weaviate's documented behaviour for what the
plugin asks (``Equal``, ``ContainsAny``, ``ContainsAll``, ``And``; BM25 over the
``word``-tokenized text properties fused with the vector by relative score)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import struct
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import jsonschema
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.unknown_fields import UnknownFieldSet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

VENDOR = Path(__file__).parent / "vendor" / "weaviate_1.39.0"
SWAGGER: dict[str, Any] = json.loads((VENDOR / "schema.subset.json").read_text())
VERSION = "1.39.0"


def _compiled_pool() -> descriptor_pool.DescriptorPool:
    """Weaviate's protos compiled into a descriptor pool of their own."""
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "weaviate.pb"
        done = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{VENDOR}", f"-I{include}",
             "--include_imports", f"--descriptor_set_out={out}",
             *sorted(str(p.relative_to(VENDOR)) for p in (VENDOR / "v1").glob("*.proto"))],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"protoc: {done.stderr}")
        files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    return pool


POOL = _compiled_pool()


def message(name: str) -> Any:
    """The class of the message ``weaviate.v1.NAME`` (or a full name) as published."""
    full = name if "." in name else f"weaviate.v1.{name}"
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full))


def unknown_fields(msg: Any, path: str = "") -> list[str]:
    """Where a parsed message carries fields its published proto does not have."""
    found = [f"{path or msg.DESCRIPTOR.name}: field {f.field_number}"
             for f in UnknownFieldSet(msg)]  # fmt: skip
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        here = f"{path or msg.DESCRIPTOR.name}.{field.name}"
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if hasattr(v, "ListFields")]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            found += unknown_fields(item, here)
    return found


class Refused(Exception):
    """A request Weaviate would refuse: answered with this gRPC status or HTTP code."""

    def __init__(self, message: str, code: Any = grpc.StatusCode.INVALID_ARGUMENT,
                 http: int = 422) -> None:  # fmt: skip
        super().__init__(message)
        self.code, self.http = code, http


class Weaviate:
    """Collections in memory behind the REST and gRPC APIs; ``api_key``: the key a
    caller must send as ``Authorization: Bearer KEY`` (None: anonymous access)."""

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        #: the vectorizer modules it has (a stand-in for text2vec-transformers: words
        #: hashed into 64 dimensions, the way a module makes vectors server-side)
        self.modules = {"text2vec-transformers": {"name": "test stand-in"}}
        self.classes: dict[str, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.problems: list[str] = []
        self.calls: list[str] = []
        #: how many objects came with a vector of their own (none when a module makes them)
        self.vectors_sent = 0
        self._lock = threading.Lock()

    # -- REST ------------------------------------------------------------------------

    def app(self) -> Starlette:
        """The REST API, under ``/v1``."""
        one = "/schema/{className}"
        routes = [
            Route("/v1/meta", self._rest("/meta", "get", self._meta)),
            Route("/v1/.well-known/ready", self._rest("/.well-known/ready", "get", self._ok)),
            Route("/v1/.well-known/live", self._rest("/.well-known/live", "get", self._ok)),
            Route("/v1/schema", self._rest("/schema", "post", self._create), methods=["POST"]),
            Route("/v1/schema", self._rest("/schema", "get", self._dump), methods=["GET"]),
            Route(f"/v1{one}", self._rest(one, "get", self._class), methods=["GET"]),
            Route(f"/v1{one}", self._rest(one, "delete", self._drop), methods=["DELETE"]),
        ]
        return Starlette(routes=routes)

    def _rest(self, path: str, method: str, handler: Any) -> Any:
        operation = SWAGGER["paths"][path][method]

        async def endpoint(request: Request) -> Response:
            name = operation["operationId"]
            self.calls.append(name)
            try:
                self._authorized(request.headers.get("authorization"), http=True)
                body = None
                for param in operation.get("parameters", []):
                    if param.get("in") == "body":
                        body = json.loads(await request.body() or b"null")
                        self._check(param["schema"], body, f"{name} request")
                status, payload = handler(request, body)
            except Refused as exc:
                status, payload = exc.http, {"error": [{"message": str(exc)}]}
            answer = operation["responses"].get(str(status))
            if answer is None:
                self.problems.append(f"{name}: status {status} is not in the description")
            elif "schema" in answer:
                self._check(answer["schema"], payload, f"{name} response {status}")
            if payload is None:
                return Response(status_code=status)
            return JSONResponse(payload, status_code=status)

        return endpoint

    def _check(self, schema: dict[str, Any], instance: Any, what: str) -> None:
        """Keep what is wrong with ``instance`` against ``schema``; a request that is wrong
        is refused (422, as Weaviate answers a body it cannot take)."""
        whole = {**schema, "definitions": SWAGGER["definitions"]}
        errors = list(jsonschema.Draft4Validator(whole).iter_errors(instance))
        if errors:
            self.problems.append(f"{what}: " + "; ".join(e.message for e in errors))
            if "request" in what:
                raise Refused(f"{what}: {errors[0].message}")

    def _authorized(self, header: str | None, *, http: bool) -> None:
        if self.api_key is not None and header != f"Bearer {self.api_key}":
            if http:
                raise Refused("anonymous access not enabled, please provide an auth scheme"
                              " such as OIDC", http=401)  # fmt: skip
            raise Refused("unauthenticated", grpc.StatusCode.UNAUTHENTICATED)

    def _meta(self, request: Request, body: Any) -> tuple[int, Any]:
        return 200, {"hostname": f"http://{request.url.netloc}", "version": VERSION,
                     "modules": self.modules, "grpcMaxMessageSize": 104858000}  # fmt: skip

    def _ok(self, request: Request, body: Any) -> tuple[int, Any]:
        return 200, None

    def _create(self, request: Request, body: Any) -> tuple[int, Any]:
        name = body["class"]
        if not re.fullmatch(r"[A-Z][_0-9A-Za-z]*", name):
            raise Refused(f"class name {name!r} must start with a capital letter")
        for vector in (body.get("vectorConfig") or {}).values():
            for module in vector.get("vectorizer") or {}:
                if module != "none" and module not in self.modules:
                    raise Refused(f"vectorizer: no module with name {module!r} present")
        with self._lock:
            if name in self.classes:
                raise Refused(f"class name {name!r} already exists")
            self.classes[name] = filled(body)
            self.objects[name] = {}
        return 200, self.classes[name]

    def _dump(self, request: Request, body: Any) -> tuple[int, Any]:
        return 200, {"classes": list(self.classes.values())}

    def _class(self, request: Request, body: Any) -> tuple[int, Any]:
        found = self.classes.get(request.path_params["className"])
        return (200, found) if found is not None else (404, None)

    def _drop(self, request: Request, body: Any) -> tuple[int, Any]:
        with self._lock:
            self.classes.pop(request.path_params["className"], None)
            self.objects.pop(request.path_params["className"], None)
        return 200, None

    # -- gRPC ------------------------------------------------------------------------

    def grpc_handler(self) -> Any:
        """The ``weaviate.v1.Weaviate`` service (the methods the plugin uses) and
        ``grpc.health.v1.Health``, each request parsed by the published protos."""
        methods = {
            "Search": ("SearchRequest", "SearchReply", self._search),
            "BatchObjects": ("BatchObjectsRequest", "BatchObjectsReply", self._batch),
            "BatchDelete": ("BatchDeleteRequest", "BatchDeleteReply", self._batch_delete),
        }
        handlers = {name: grpc.unary_unary_rpc_method_handler(
            self._rpc(name, message(req), message(rep), fn),
            request_deserializer=lambda b: b, response_serializer=lambda m: m)
            for name, (req, rep, fn) in methods.items()}  # fmt: skip
        health = grpc.unary_unary_rpc_method_handler(
            self._rpc("Check", message("WeaviateHealthCheckRequest"),
                      message("WeaviateHealthCheckResponse"), self._health),
            request_deserializer=lambda b: b, response_serializer=lambda m: m,
        )  # fmt: skip
        return [grpc.method_handlers_generic_handler("weaviate.v1.Weaviate", handlers),
                grpc.method_handlers_generic_handler("grpc.health.v1.Health",
                                                     {"Check": health})]  # fmt: skip

    def _rpc(self, name: str, request_type: Any, reply_type: Any, fn: Any) -> Any:
        def call(data: bytes, context: Any) -> bytes:
            self.calls.append(name)
            request = request_type.FromString(data)
            unknown = unknown_fields(request)
            if unknown:
                self.problems.append(f"{name} request: not in the protos: {unknown}")
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown fields {unknown}")
            try:
                if name != "Check":
                    headers = dict(context.invocation_metadata())
                    self._authorized(headers.get("authorization"), http=False)
                reply = fn(request, reply_type)
            except Refused as exc:
                context.abort(exc.code, str(exc))
            return reply.SerializeToString()

        return call

    def _health(self, request: Any, reply_type: Any) -> Any:
        return reply_type(status=reply_type.SERVING)

    def _vectorized(self, collection: str, props: dict[str, Any]) -> list[float]:
        """The vector the collection's module makes of ``props`` (empty: it has none)."""
        for vector in (self.classes[collection].get("vectorConfig") or {}).values():
            modules = [m for m in vector.get("vectorizer") or {} if m != "none"]
            if modules:
                wanted = vector["vectorizer"][modules[0]].get("properties") or list(props)
                return _stand_in(" ".join(str(props.get(p, "")) for p in wanted))
        return []

    def _collection(self, name: str) -> dict[str, dict[str, Any]]:
        if name not in self.objects:
            raise Refused(f"could not find class {name} in schema", grpc.StatusCode.NOT_FOUND)
        return self.objects[name]

    def _batch(self, request: Any, reply_type: Any) -> Any:
        errors = []
        with self._lock:
            for index, obj in enumerate(request.objects):
                held = self._collection(obj.collection)
                self.vectors_sent += bool(_vector(obj))
                vector = _vector(obj) or self._vectorized(
                    obj.collection, _properties(obj.properties)
                )
                known = {len(o["vector"]) for o in held.values()}
                if known and len(vector) not in known:
                    errors.append(reply_type.BatchError(index=index, error=(
                        f"new node has a vector with length {len(vector)}. Existing nodes have"
                        f" vectors with length {known.pop()}")))  # fmt: skip
                    continue
                held[obj.uuid] = {"uuid": obj.uuid, "vector": vector,
                                  "properties": _properties(obj.properties)}  # fmt: skip
        return reply_type(took=0.001, errors=errors)

    def _batch_delete(self, request: Any, reply_type: Any) -> Any:
        with self._lock:
            held = self._collection(request.collection)
            doomed = [k for k, o in held.items() if _matches(o["properties"], request.filters)]
            if not request.dry_run:
                for key in doomed:
                    del held[key]
        return reply_type(took=0.001, matches=len(doomed), successful=len(doomed))

    def _search(self, request: Any, reply_type: Any) -> Any:
        with self._lock:
            held = list(self._collection(request.collection).values())
        if request.HasField("filters"):
            held = [o for o in held if _matches(o["properties"], request.filters)]
        scored: list[tuple[float, dict[str, Any]]]
        if request.HasField("hybrid_search"):
            scored = _hybrid(
                request.hybrid_search,
                held,
                self._vectorized(request.collection, {"text": request.hybrid_search.query}),
            )
        elif request.HasField("near_vector"):
            query = _vector(request.near_vector)
            scored = sorted(((_cosine(query, o["vector"]), o) for o in held),
                            key=lambda pair: -pair[0])  # fmt: skip
        else:
            scored = [(0.0, o) for o in sorted(held, key=lambda o: o["uuid"])]
        offset = request.offset
        limit = request.limit or 10
        results = []
        for score, obj in scored[offset : offset + limit]:
            results.append(_result(request, reply_type, obj, score))
        return reply_type(took=0.001, results=results)


#: what Weaviate v1.39 fills in a class it is given (entities/vectorindex/hnsw/config.go
#: and its schema defaults): a GET of the class returns them
HNSW = {
    "cleanupIntervalSeconds": 300,
    "distance": "cosine",
    "dynamicEfMin": 100,
    "dynamicEfMax": 500,
    "dynamicEfFactor": 8,
    "ef": -1,
    "efConstruction": 128,
    "filterStrategy": "acorn",
    "flatSearchCutoff": 40000,
    "maxConnections": 32,
    "skip": False,
    "vectorCacheMaxObjects": 1000000000000,
    "pq": {"enabled": False},
    "bq": {"enabled": False},
    "sq": {"enabled": False},
    "rq": {"enabled": False},
}
CLASS = {
    "invertedIndexConfig": {"bm25": {"b": 0.75, "k1": 1.2}, "cleanupIntervalSeconds": 60,
                            "stopwords": {"preset": "en", "additions": [], "removals": []},
                            "indexNullState": False, "indexPropertyLength": False,
                            "indexTimestamps": False},
    "multiTenancyConfig": {"enabled": False, "autoTenantCreation": False,
                           "autoTenantActivation": False},
    "replicationConfig": {"factor": 1, "asyncEnabled": False,
                          "deletionStrategy": "NoAutomatedResolution"},
    "shardingConfig": {"virtualPerPhysical": 128, "desiredCount": 1, "actualCount": 1,
                       "desiredVirtualCount": 128, "actualVirtualCount": 128, "key": "_id",
                       "strategy": "hash", "function": "murmur3"},
}  # fmt: skip


def filled(body: dict[str, Any]) -> dict[str, Any]:
    """A class as Weaviate keeps it: its defaults filled in where the client left them."""
    kept = json.loads(json.dumps(body))
    for key, value in CLASS.items():
        kept.setdefault(key, json.loads(json.dumps(value)))
    for prop in kept.get("properties", []):
        text = prop["dataType"][0] in ("text", "text[]")
        prop.setdefault("indexFilterable", True)
        prop.setdefault("indexSearchable", text)
        prop.setdefault("indexRangeFilters", False)
        if text:
            prop.setdefault("tokenization", "word")
    for vector in (kept.get("vectorConfig") or {}).values():
        vector.setdefault("vectorIndexType", "hnsw")
        vector["vectorIndexConfig"] = {**HNSW, **(vector.get("vectorIndexConfig") or {})}
    return kept


def _vector(obj: Any) -> list[float]:
    """The vector a message carries: its first ``vectors`` entry (little-endian float32
    bytes), else the older ``vector_bytes`` or ``vector`` fields."""
    if obj.vectors:
        data = obj.vectors[0].vector_bytes
        return list(struct.unpack(f"<{len(data) // 4}f", data))
    if obj.vector_bytes:
        return list(struct.unpack(f"<{len(obj.vector_bytes) // 4}f", obj.vector_bytes))
    return list(obj.vector)


def _properties(props: Any) -> dict[str, Any]:
    """A batch object's properties: the Struct of plain ones and the typed arrays."""
    out: dict[str, Any] = {}
    for key, value in props.non_ref_properties.fields.items():
        kind = value.WhichOneof("kind")
        if kind == "list_value":
            out[key] = [v.string_value for v in value.list_value.values]
        elif kind == "number_value":
            out[key] = value.number_value
        elif kind == "string_value":
            out[key] = value.string_value
        elif kind == "bool_value":
            out[key] = value.bool_value
    for item in props.text_array_properties:
        out[item.prop_name] = list(item.values)
    for item in props.int_array_properties:
        out[item.prop_name] = list(item.values)
    for key in props.empty_list_props:
        out[key] = []
    return out


def _matches(props: dict[str, Any], filters: Any) -> bool:
    op = type(filters).Operator.Name(filters.operator)
    if op == "OPERATOR_AND":
        return all(_matches(props, f) for f in filters.filters)
    if op == "OPERATOR_OR":
        return any(_matches(props, f) for f in filters.filters)
    name = filters.target.property if filters.HasField("target") else filters.on[0]
    value = props.get(name)
    values = value if isinstance(value, list) else [value]
    kind = filters.WhichOneof("test_value")
    wanted = (list(filters.value_text_array.values) if kind == "value_text_array"
              else [filters.value_text] if kind == "value_text"
              else [filters.value_int] if kind == "value_int" else [])  # fmt: skip
    if op == "OPERATOR_EQUAL":
        return wanted[0] in values
    if op == "OPERATOR_CONTAINS_ANY":
        return any(w in values for w in wanted)
    if op == "OPERATOR_CONTAINS_ALL":
        return all(w in values for w in wanted)
    raise Refused(f"the test server does not do {op}")


def _stand_in(text: str) -> list[float]:
    """The stand-in module's vector: the text's words hashed into 64 dimensions."""
    import hashlib

    vector = [0.0] * 64
    for word in re.findall(r"\w+", text.lower()):
        vector[hashlib.sha256(word.encode()).digest()[0] % 64] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _cosine(a: list[float], b: list[float]) -> float:
    if len(a) != len(b):
        raise Refused(f"vector search: the query vector has length {len(a)}, the collection's"
                      f" vectors {len(b)}")  # fmt: skip
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0


def _hybrid(hybrid: Any, held: list[dict[str, Any]],
            made: list[float]) -> list[tuple[float, dict[str, Any]]]:  # fmt: skip
    """Relative-score fusion of cosine similarity and BM25 over the text properties
    (``made``: the query's vector by the collection's module, when it has one)."""
    query = _vector(hybrid) if (hybrid.vectors or hybrid.vector_bytes) else made
    if hybrid.HasField("near_vector"):
        query = _vector(hybrid.near_vector)
    dense = {o["uuid"]: _cosine(query, o["vector"]) for o in held} if query else {}
    words = re.findall(r"\w+", hybrid.query.lower())
    texts = {o["uuid"]: re.findall(r"\w+", " ".join(
        str(v) for k, v in o["properties"].items() if k in ("text", "heading")).lower())
        for o in held}  # fmt: skip
    count = len(held) or 1
    average = sum(len(t) for t in texts.values()) / count or 1.0
    keyword = {}
    for key, text in texts.items():
        score = 0.0
        for word in set(words):
            tf = text.count(word)
            df = sum(word in t for t in texts.values())
            if tf:
                idf = math.log(1 + (count - df + 0.5) / (df + 0.5))
                score += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len(text) / average))
        keyword[key] = score
    alpha = hybrid.alpha_param if hybrid.use_alpha_param else 0.75

    def scaled(scores: dict[str, float]) -> dict[str, float]:
        if not scores:
            return {}
        low, high = min(scores.values()), max(scores.values())
        return {k: (v - low) / (high - low) if high > low else 1.0 for k, v in scores.items()}

    d, k = scaled(dense), scaled(keyword)
    fused = [(alpha * d.get(o["uuid"], 0.0) + (1 - alpha) * k.get(o["uuid"], 0.0), o)
             for o in held]  # fmt: skip
    return sorted(fused, key=lambda pair: -pair[0])


def _result(request: Any, reply_type: Any, obj: dict[str, Any], score: float) -> Any:
    """A found object as ``SearchResult``: the properties asked for, its id and score."""
    asked = request.properties
    wanted = (list(asked.non_ref_properties)
              if asked.non_ref_properties and not asked.return_all_nonref_properties
              else list(obj["properties"]))  # fmt: skip
    value_type = message("Value")
    values = {}
    for key in wanted:
        if key not in obj["properties"]:
            continue
        value = obj["properties"][key]
        if isinstance(value, list):
            texts = message("TextValues")(values=[str(v) for v in value])
            values[key] = value_type(list_value=message("ListValue")(text_values=texts))
        elif isinstance(value, bool):
            values[key] = value_type(bool_value=value)
        elif isinstance(value, int | float) and float(value).is_integer():
            values[key] = value_type(int_value=int(value))
        elif isinstance(value, int | float):
            values[key] = value_type(number_value=float(value))
        else:
            values[key] = value_type(text_value=str(value))
    return message("SearchResult")(
        properties=message("PropertiesResult")(non_ref_props=message("Properties")(
            fields=values), target_collection=request.collection),
        metadata=message("MetadataResult")(id=obj["uuid"], score=score, score_present=True),
    )  # fmt: skip


@contextlib.contextmanager
def serve(weaviate: Weaviate) -> Iterator[tuple[int, int]]:
    """The REST API and the gRPC API on free ports of 127.0.0.1: (http port, grpc port)."""
    from openai_server import serve as serve_http

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    for handler in weaviate.grpc_handler():
        server.add_generic_rpc_handlers((handler,))
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with serve_http(weaviate.app()) as url:
            yield int(url.removesuffix("/v1").rsplit(":", 1)[1]), grpc_port
    finally:
        server.stop(grace=None)


def new_id() -> str:
    """A UUID as Weaviate takes one."""
    return str(uuid.uuid4())
