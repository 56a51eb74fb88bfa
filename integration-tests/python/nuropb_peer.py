"""A live Python NuroPb 0.1.8 peer for the integration tests (integration-tests/src/python-peer.ts).

It hosts the services named in its configuration (each an RMQAPI in service mode) and, when asked,
a client-only RMQAPI, all on the same mesh. It talks to the test over a line protocol:

* configuration: the JSON object in the environment variable NUROPB_PEER_CONFIG
  {"amqp_url": "...", "client": true, "services": [{"name": "...", "kind": "interop" | "shared",
  "event_bindings": ["..."], "prefetch_count": 1}]}
* stdout, one JSON object per line: {"type": "ready", ...} once everything is connected, then
  {"type": "reply", "id": N, "ok": true, "value": ...} or {"type": "reply", "id": N, "ok": false,
  "error": {"class": "...", "description": "..."}} for each command, and {"type": "record", ...}
  for what the services received (commands, events, calls);
* stdin, one JSON object per line: {"id": N, "op": "request" | "command" | "publish_event" |
  "describe" | "requires_encryption" | "has_public_key" | "stop", ...}. End of input stops the peer.

Integers outside the range a JavaScript number holds exactly travel in both directions as
{"$int": "<decimal digits>"} so that neither side's JSON reader rounds them. Diagnostics go to
stderr. Only the public API of Python NuroPb is used.
"""

import asyncio
import json
import logging
import math
import os
import sys
import threading
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives.asymmetric import rsa

from nuropb.contexts.context_manager_decorator import nuropb_context
from nuropb.contexts.describe import publish_to_mesh
from nuropb.interface import NuropbAuthorizationError, NuropbSuccess
from nuropb.rmq_api import RMQAPI

logger = logging.getLogger("nuropb_peer")

MAX_SAFE_INTEGER = 2**53 - 1
GOOD_TOKEN = "Bearer good-token"


def tag_big_ints(value: Any) -> Any:
    """Replaces ints a JavaScript number cannot hold exactly by {"$int": digits}, and NaN and
    the infinities (which strict JSON cannot carry) by {"$float": "nan" | "inf" | "-inf"}."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return {"$int": str(value)} if abs(value) > MAX_SAFE_INTEGER else value
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, dict):
        return {str(k): tag_big_ints(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [tag_big_ints(v) for v in value]
    return value


def untag_big_ints(obj: Dict[str, Any]) -> Any:
    """json object_hook: {"$int": digits} back to an int."""
    if len(obj) == 1 and isinstance(obj.get("$int"), str):
        return int(obj["$int"])
    return obj


def emit(message: Dict[str, Any]) -> None:
    """Writes one line to the test (stdout), flushed at once."""
    sys.stdout.write(json.dumps(tag_big_ints(message), default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def type_tree(value: Any) -> Any:
    """The structure of `value` with every leaf replaced by "type:repr" (what Python received)."""
    if isinstance(value, dict):
        return {k: type_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [type_tree(v) for v in value]
    return f"{type(value).__name__}:{value!r}"


def authorise(token: str) -> Dict[str, Any]:
    """authorise_func of the protected method: one good token, everything else refused."""
    if token == GOOD_TOKEN:
        return {"user": "alice", "scope": "interop"}
    raise NuropbAuthorizationError(description=f"token refused: {token[:12]}")


class InteropService:
    """Python side of the live interop tests."""

    _version = "1.2.3"

    def __init__(self, service_name: str, private_key: rsa.RSAPrivateKey) -> None:
        self._service_name = service_name
        self._private_key = private_key

    @publish_to_mesh(description="Returns value unchanged")
    def echo(self, value: Any) -> Any:
        return value

    async def echo_async(self, value: Any) -> Any:
        await asyncio.sleep(0)
        return value

    def type_tree(self, value: Any) -> Any:
        """The types Python received, leaf by leaf."""
        return type_tree(value)

    def non_finite(self) -> Dict[str, Any]:
        """Floats Python's json.dumps writes as the bare NaN / Infinity tokens ([PY-QUIRK] §4.6)."""
        return {"nan": float("nan"), "inf": float("inf"), "ninf": float("-inf"), "list": [1.5, float("nan")]}

    def fail_sync(self, message: str) -> None:
        raise ValueError(message)

    async def fail_async(self, message: str) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(message)

    @nuropb_context
    @publish_to_mesh(authorize_func=authorise)
    def whoami(self, ctx: Any, note: str) -> Dict[str, Any]:
        return {"claims": ctx.user_claims, "note": note}

    @nuropb_context
    @publish_to_mesh(requires_encryption=True)
    def secret_echo(self, ctx: Any, value: Any) -> Dict[str, Any]:
        return {"value": value, "context": ctx.context}

    @nuropb_context
    @publish_to_mesh(requires_encryption=True)
    def secret_fail(self, ctx: Any, message: str) -> None:
        raise ValueError(message)

    @nuropb_context
    def remember(self, ctx: Any, key: str, value: Any) -> None:
        """A command handler: records what it got."""
        emit(
            {
                "type": "record",
                "kind": "command",
                "service": self._service_name,
                "method": "remember",
                "params": {"key": key, "value": value},
                "context": ctx.context,
            }
        )

    @nuropb_context
    def emit_events(self, ctx: Any, topic: str, payload: Any) -> Dict[str, Any]:
        """Answers and publishes one event per call, the NuroPb 0.1.8 way (NuropbSuccess)."""
        raise NuropbSuccess(
            result={"emitted": topic},
            events=[{"topic": topic, "payload": payload, "target": ["interop-target"]}],
        )

    def _private(self) -> str:
        return "never reachable"

    def _handle_event_(
        self, topic: str, event: Any, target: Optional[List[str]], context: Dict[str, Any]
    ) -> None:
        # Synchronous on purpose: Python NuroPb 0.1.8 never awaits an async hook (PROTOCOL.md §6.2).
        emit(
            {
                "type": "record",
                "kind": "event",
                "service": self._service_name,
                "topic": topic,
                "event": event,
                "target": target,
                "context": context,
            }
        )


class SharedService:
    """One instance of a service that TypeScript instances serve too (one shared queue)."""

    def __init__(self, service_name: str) -> None:
        self._service_name = service_name

    def whoami(self, n: int) -> Dict[str, Any]:
        emit({"type": "record", "kind": "call", "service": self._service_name, "n": n})
        return {"lang": "python", "n": n}


def build_service(spec: Dict[str, Any]) -> object:
    if spec["kind"] == "interop":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return InteropService(spec["name"], key)
    if spec["kind"] == "shared":
        return SharedService(spec["name"])
    raise ValueError(f"unknown service kind {spec['kind']!r}")


class Peer:
    def __init__(self, config: Dict[str, Any]) -> None:
        self.config = config
        self.services: Dict[str, RMQAPI] = {}
        self.client: Optional[RMQAPI] = None
        self.stopping = False

    async def start(self) -> Dict[str, Any]:
        url = self.config["amqp_url"]
        for spec in self.config.get("services", []):
            api = RMQAPI(
                amqp_url=url,
                service_name=spec["name"],
                service_instance=build_service(spec),
                transport_settings={
                    "event_bindings": spec.get("event_bindings", []),
                    "prefetch_count": spec.get("prefetch_count", 1),
                },
            )
            await api.connect()
            if not api.connected:
                raise RuntimeError(f"service {spec['name']} could not connect to RabbitMQ")
            self.services[spec["name"]] = api
        if self.config.get("client", False):
            self.client = RMQAPI(amqp_url=url, transport_settings={"default_ttl": 30_000})
            await self.client.connect()
            if not self.client.connected:
                raise RuntimeError("the client could not connect to RabbitMQ")
        return {
            "services": {n: a.transport.instance_id for n, a in self.services.items()},
            "client_response_queue": self.client.transport.response_queue
            if self.client
            else None,
        }

    def need_client(self) -> RMQAPI:
        if self.client is None:
            raise RuntimeError("this peer was started without a client")
        return self.client

    async def run(self, op: str, args: Dict[str, Any]) -> Any:
        if op == "request":
            client = self.need_client()
            if args.get("encrypted", False):
                await client.has_public_key(args["service"])  # describe: loads the public key
            return await asyncio.wait_for(
                client.request(
                    service=args["service"],
                    method=args["method"],
                    params=args.get("params", {}),
                    context=args.get("context", {}),
                    ttl=args.get("ttl"),
                    trace_id=args.get("trace_id"),
                    rpc_response=args.get("rpc_response", False),
                    encrypted=args.get("encrypted", False),
                ),
                timeout=args.get("timeout_s", 20),
            )
        if op == "command":
            client = self.need_client()
            if args.get("encrypted", False):
                await client.has_public_key(args["service"])
            client.command(
                service=args["service"],
                method=args["method"],
                params=args.get("params", {}),
                context=args.get("context", {}),
                trace_id=args.get("trace_id"),
                encrypted=args.get("encrypted", False),
            )
            return None
        if op == "publish_event":
            self.need_client().publish_event(
                topic=args["topic"],
                event=args["event"],
                context=args.get("context", {}),
                trace_id=args.get("trace_id"),
            )
            return None
        if op == "describe":
            return await asyncio.wait_for(
                self.need_client().describe_service(args["service"]), timeout=20
            )
        if op == "requires_encryption":
            return await asyncio.wait_for(
                self.need_client().requires_encryption(args["service"], args["method"]),
                timeout=20,
            )
        if op == "has_public_key":
            return await asyncio.wait_for(
                self.need_client().has_public_key(args["service"]), timeout=20
            )
        raise ValueError(f"unknown op {op!r}")

    async def handle(self, message: Dict[str, Any]) -> None:
        request_id = message.get("id")
        try:
            value = await self.run(message.get("op", ""), message)
            emit({"type": "reply", "id": request_id, "ok": True, "value": value})
        except BaseException as err:  # reported to the test, which decides
            emit({"type": "reply", "id": request_id, "ok": False, "error": describe_error(err)})

    async def stop(self) -> None:
        apis = list(self.services.values()) + ([self.client] if self.client else [])
        for api in apis:
            try:
                await asyncio.wait_for(api.disconnect(), timeout=5)
            except BaseException as err:
                logger.warning("disconnect failed: %s", err)


def describe_error(err: BaseException) -> Dict[str, Any]:
    description = getattr(err, "description", None)
    return {"class": type(err).__name__, "description": description or str(err)}


async def main() -> int:
    config = json.loads(os.environ["NUROPB_PEER_CONFIG"])
    peer = Peer(config)
    try:
        info = await asyncio.wait_for(peer.start(), timeout=60)
    except BaseException as err:
        print(f"nuropb_peer: could not start: {type(err).__name__}: {err}", file=sys.stderr)
        await peer.stop()
        return 2

    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[Optional[str]] = asyncio.Queue()

    def read_stdin() -> None:
        for raw in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, raw)
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    emit({"type": "ready", **info})

    tasks = set()
    while True:
        line = await lines.get()
        if line is None:
            break
        if not line.strip():
            continue
        try:
            message = json.loads(line, object_hook=untag_big_ints)
        except ValueError as err:
            emit({"type": "reply", "id": None, "ok": False, "error": describe_error(err)})
            continue
        if message.get("op") == "stop":
            await peer.stop()
            emit({"type": "reply", "id": message.get("id"), "ok": True, "value": None})
            return 0
        task = asyncio.ensure_future(peer.handle(message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await peer.stop()
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=os.environ.get("NUROPB_PEER_LOG_LEVEL", "WARNING"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(asyncio.run(main()))
