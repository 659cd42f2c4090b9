"""What the saga benchmark reads off the running system, black-box.

CPU and memory from ``/proc`` (each process the local platform recorded in
``.run/*.pid``, with its children: Postgres runs one backend per connection), the
apiserver's request counters from its ``/metrics`` (the audit policy logs writes
only, so GETs are counted there), writes per object from the audit log, and the
Midtrans status calls from the sandbox's access log. Every reader takes a snapshot;
the benchmark subtracts two.
"""

from __future__ import annotations

import os
import re
import ssl
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from saga_devenv.config import DevConfig
from tests.helpers.audit_log import WRITE_VERBS, Entry, NamespaceAudit

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Table name -> the pid file the platform writes in its run folder.
SYSTEM = {
    "apiserver": "kube-apiserver",
    "etcd": "etcd",
    "operator": "checkout-operator",
    "expiry worker": "expiry-worker",
    "API": "checkout-api",
    "listener": "payment-listener",
    "User": "user-service",
    "Product": "product-service",
    "Postgres": "postgres",
    "Redis": "redis",
    "NATS": "nats",
}
SANDBOX = "midtrans-sandbox"  # measured, but not the system's own cost


def pid_of(cfg: DevConfig, name: str) -> int:
    pid = int((cfg.run_dir / f"{name}.pid").read_text().strip())
    os.kill(pid, 0)  # raises if it is not running
    return pid


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return found


def cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its descendants: their own user+system time, and that of
    children already reaped (cutime+cstime), so a backend that ends between two
    snapshots is still counted, by its parent."""
    try:
        fields = _stat_fields(pid)
    except FileNotFoundError:
        return 0.0
    # fields[11..14] = utime, stime, cutime, cstime (stat fields 14-17)
    ticks = sum(int(f) for f in fields[11:15])
    total = ticks / CLOCK_TICKS
    for child in _children(pid):
        total += cpu_seconds(child)
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


@dataclass(frozen=True)
class CpuSnapshot:
    at: float  # time.monotonic()
    seconds: dict[str, float]  # table name -> CPU seconds so far

    @classmethod
    def take(cls, cfg: DevConfig, at: float) -> CpuSnapshot:
        names = {**SYSTEM, "Midtrans sandbox": SANDBOX}
        return cls(at, {label: cpu_seconds(pid_of(cfg, f)) for label, f in names.items()})

    def minus(self, before: CpuSnapshot) -> dict[str, float]:
        return {k: self.seconds[k] - before.seconds.get(k, 0.0) for k in self.seconds}


# --- the apiserver's request counters ------------------------------------------------

_SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


class ApiserverMetrics:
    """``apiserver_request_total`` for Checkouts, summed by verb (all codes and scopes)."""

    def __init__(self, cfg: DevConfig) -> None:
        pki = cfg.run_dir / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self._http = httpx.AsyncClient(base_url=cfg.apiserver_url, verify=context, timeout=30)

    async def checkout_requests(self) -> Counter[str]:
        reply = await self._http.get("/metrics")
        reply.raise_for_status()
        counts: Counter[str] = Counter()
        for line in reply.text.splitlines():
            match = _SAMPLE.match(line)
            if match is None:
                continue
            labels = dict(_LABEL.findall(match["labels"]))
            if labels.get("resource") == "checkouts":
                verb = labels["verb"] + (
                    "/" + labels["subresource"] if labels["subresource"] else ""
                )
                code = labels.get("code", "")
                counts[verb] += int(float(match["value"]))
                if code.startswith("2"):
                    counts[verb + " ok"] += int(float(match["value"]))
        return counts

    async def close(self) -> None:
        await self._http.aclose()


# --- the audit log: writes per object ------------------------------------------------


def _succeeded_write(entry: Entry) -> bool:
    return (
        entry.get("stage") == "ResponseComplete"
        and entry.get("verb") in WRITE_VERBS
        and 200 <= (entry.get("responseStatus") or {}).get("code", 0) < 300
    )


class AuditCounts:
    """Successful writes seen in the audit log since this was made, in one namespace."""

    def __init__(self, path: Path, namespace: str) -> None:
        self._audit = NamespaceAudit(path, namespace)

    def refresh(self) -> list[Entry]:
        return [e for e in self._audit.refresh() if _succeeded_write(e)]

    def writes(self, names: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
        """Writes to these Checkouts and to Events about them (named ``<checkout>.<hex>``),
        each by verb (``patch/status``...), TTL deletes included."""
        wanted = set(names)
        checkouts: Counter[str] = Counter()
        events: Counter[str] = Counter()
        for entry in self.refresh():
            ref = entry["objectRef"]
            verb = str(entry["verb"]) + ("/" + ref["subresource"] if ref.get("subresource") else "")
            name = str(ref.get("name") or "")
            if ref.get("resource") == "checkouts" and name in wanted:
                checkouts[verb] += 1
            elif ref.get("resource") == "events" and name.rsplit(".", 1)[0] in wanted:
                events[verb] += 1
        return checkouts, events

    def creates(self) -> int:
        """Checkouts created in the namespace since this was made (whoever made them)."""
        return sum(
            1
            for e in self.refresh()
            if e["objectRef"].get("resource") == "checkouts" and e["verb"] == "create"
        )


# --- the sandbox's access log: Midtrans status calls ---------------------------------

_STATUS_CALL = re.compile(rb'"GET /v2/([^/ ]+)/status HTTP')


@dataclass
class StatusCalls:
    """``GET /v2/<order>/status`` lines the sandbox logged since this was made."""

    path: Path
    offset: int = 0

    def __post_init__(self) -> None:
        self.offset = self.path.stat().st_size

    def read(self) -> list[str]:
        """The order ids asked about since the last read (``<order>~<n>`` as ``<order>``)."""
        size = self.path.stat().st_size
        if size < self.offset:  # rotated or truncated: start again
            self.offset = 0
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read(size - self.offset)
        complete = data.rfind(b"\n") + 1
        self.offset += complete
        return [
            m.group(1).decode().split("~", 1)[0] for m in _STATUS_CALL.finditer(data[:complete])
        ]
