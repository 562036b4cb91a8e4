"""`gateway conform`, proved both ways: the worker kits (Python, Perl, JavaScript) and a
plain RPC-tutorial worker pass what they claim; workers with a planted bug fail, and the
failing case is named. Real RabbitMQ (a fresh virtual host per run, or conform's own
throwaway node), real worker processes, the real command line."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys

import orjson
import pytest

from gateway.conform.plan import load_plan
from tests.support import ROOT, RabbitNode

CONFORM = [sys.executable, "-m", "gateway", "conform"]
TEST_OP = "conform.steps"
TEST_CONTRACTS = ROOT / "tests" / "conform"
TEST_VECTORS = TEST_CONTRACTS / "vectors" / f"{TEST_OP}.json"
# A short lease keeps the long cases quick: the recorded slow request (8 steps of 0.5 s)
# runs 4 leases; the kits heart-beat every third of it.
LEASE = "1"
QUICK_CASES = ["answers", "on-contract", "progress", "error", "redelivery"]
LONG_CASES = [*QUICK_CASES, "reject", "started", "lease", "cancel", "deadline"]
# For runs that need the slow request only for `progress`: a short one.
SHORT_SLOW = '{"steps": 2, "seconds": 0.1}'


class Run:
    """A finished `gateway conform --json` run: its exit status and rows, by case."""

    def __init__(self, done: subprocess.CompletedProcess[bytes]) -> None:
        self.status = done.returncode
        self.stdout = done.stdout.decode()
        self.stderr = done.stderr.decode()
        lines = [line for line in self.stdout.splitlines() if line.startswith("{")]
        self.rows = {row["case"]: row for row in map(orjson.loads, lines)}

    def outcomes(self) -> dict[str, str]:
        return {case: row["outcome"] for case, row in self.rows.items()}

    def __repr__(self) -> str:
        return f"exit {self.status}\n{self.stdout}\n{self.stderr}"


def conform(*args: str, command: list[str], broker_url: str | None) -> Run:
    where = ["--broker-url", broker_url] if broker_url else []
    done = subprocess.run(
        [*CONFORM, *where, *args, "--", *command],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
        check=False,
    )
    return Run(done)


def conform_steps(rabbit: RabbitNode, *args: str, command: list[str]) -> Run:
    """conform on the test operation, on a fresh virtual host of the session's node."""
    url = rabbit.add_vhost(f"conform-{secrets.token_hex(4)}")
    return conform(
        "--json",
        "--op",
        TEST_OP,
        "--contracts",
        str(TEST_CONTRACTS),
        *args,
        command=command,
        broker_url=url,
    )


def assert_passed(run: Run, cases: list[str]) -> None:
    assert run.status == 0, run
    assert list(run.rows) == cases, run
    assert all(outcome == "PASS" for outcome in run.outcomes().values()), run


# -- the kits pass their long claims ----------------------------------------------------------


def test_the_python_kit_passes_the_long_claims(rabbit: RabbitNode) -> None:
    run = conform_steps(
        rabbit,
        "--claims",
        "long",
        "--lease-seconds",
        LEASE,
        command=[sys.executable, "tests/conform/worker.py"],
    )
    assert_passed(run, LONG_CASES)
    assert "with the redelivered flag" in run.rows["redelivery"]["saw"]
    assert "error 'boom'" in run.rows["error"]["saw"]


def test_the_perl_kit_passes_the_long_claims(rabbit: RabbitNode) -> None:
    assert shutil.which("perl"), "perl is required"
    run = conform_steps(
        rabbit,
        "--claims",
        "long",
        "--lease-seconds",
        LEASE,
        command=["perl", "tests/conform/worker.pl"],
    )
    assert_passed(run, LONG_CASES)


@pytest.mark.skipif(
    not (shutil.which("node") and (ROOT / "clients/js/node_modules/amqplib").is_dir()),
    reason="needs node and the JS client's packages (make js-deps)",
)
def test_the_javascript_kit_passes_the_long_claims(rabbit: RabbitNode) -> None:
    run = conform_steps(
        rabbit,
        "--claims",
        "long",
        "--lease-seconds",
        LEASE,
        command=["node", "tests/conform/worker.mjs"],
    )
    assert_passed(run, LONG_CASES)


# -- a worker written after RabbitMQ's RPC tutorial passes the quick claims -------------------


def test_the_rpc_tutorial_worker_passes_the_quick_claims(rabbit: RabbitNode) -> None:
    url = rabbit.add_vhost(f"conform-{secrets.token_hex(4)}")
    run = conform(
        "--json",
        "--op",
        "math.add",
        command=[sys.executable, "examples/workers/rpc_tutorial_server.py"],
        broker_url=url,
    )
    assert run.status == 0, run
    assert run.outcomes() == {
        "answers": "PASS",
        "on-contract": "PASS",
        "progress": "n/a",  # math.add has no progress
        "error": "n/a",  # and no recorded error request
        "redelivery": "PASS",
    }, run


def test_on_a_throwaway_node_of_its_own() -> None:
    """No --broker-url: conform starts a RabbitMQ node of its own, and prints a table."""
    run = conform(
        "--op",
        "math.add",
        command=[sys.executable, "examples/workers/rpc_tutorial_server.py"],
        broker_url=None,
    )
    assert run.status == 0, run
    assert "on a throwaway RabbitMQ node" in run.stdout, run
    rows = [line.split() for line in run.stdout.splitlines()]
    table = {row[0]: row[1] for row in rows if row and row[0] in QUICK_CASES}
    assert table == {
        "answers": "PASS",
        "on-contract": "PASS",
        "progress": "n/a",
        "error": "n/a",
        "redelivery": "PASS",
    }, run


# -- planted faults are caught, and named ---------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "claims", "failing"),
    [
        ("wrong-correlation", "quick", "answers"),
        ("off-contract", "quick", "on-contract"),
        ("ignore-cancel", "long", "cancel"),
    ],
)
def test_a_planted_fault_fails_its_case(
    rabbit: RabbitNode, fault: str, claims: str, failing: str
) -> None:
    run = conform_steps(
        rabbit,
        "--claims",
        claims,
        "--lease-seconds",
        LEASE,
        "--timeout",
        "2",
        *(["--slow-request", SHORT_SLOW] if claims == "quick" else []),
        command=[sys.executable, "tests/conform/faulty_worker.py", "--fault", fault],
    )
    assert run.status == 1, run
    # Every claimed case still reports; the fault's own case fails, saying what it saw.
    assert list(run.rows) == (LONG_CASES if claims == "long" else QUICK_CASES), run
    row = run.rows[failing]
    assert row["outcome"] == "FAIL", run
    assert row["worker_output"] == [f"serving {TEST_OP} with the fault {fault}"], run
    if fault == "wrong-correlation":
        assert "which no request carried" in row["saw"], run
    if fault == "ignore-cancel":
        assert "after the cancel notice" in row["saw"], run
        # The rest of the long claims hold: only cancel is broken.
        others = {case: o for case, o in run.outcomes().items() if case != "cancel"}
        assert set(others.values()) == {"PASS"}, run
    if fault == "off-contract":
        assert "off contract" in row["saw"], run
        assert run.rows["answers"]["outcome"] == "PASS", run


# -- what cannot run says why, with exit status 2 -------------------------------------------------


def test_an_unknown_operation_is_a_setup_error() -> None:
    run = conform("--op", "no.such.op", command=["true"], broker_url="amqp://127.0.0.1:1/")
    assert run.status == 2, run
    assert run.stderr.startswith("gateway conform: no contract for no.such.op"), run
    assert len(run.stderr.splitlines()) == 1, run


def test_a_worker_that_exits_before_serving_is_a_setup_error(rabbit: RabbitNode) -> None:
    url = rabbit.add_vhost(f"conform-{secrets.token_hex(4)}")
    crash = "print('cannot start: no config'); raise SystemExit(3)"
    run = conform("--op", "math.add", command=[sys.executable, "-c", crash], broker_url=url)
    assert run.status == 2, run
    assert run.stderr.strip() == (
        "gateway conform: the worker exited (status 3) before consuming math.add: "
        "cannot start: no config"
    ), run


def test_the_test_vectors_agree_with_the_test_contract() -> None:
    """What conform sends from them, and every verdict they state."""
    plan = load_plan(
        op=TEST_OP,
        contracts_dir=TEST_CONTRACTS,
        vectors=None,
        claims="long",
        slow_request=None,
        error_request=None,
        error_code=None,
        timeout=1,
        start_timeout=1,
        lease_seconds=1,
    )
    assert plan.vectors == TEST_VECTORS  # the default: <contracts>/vectors/<op>.json
    assert plan.slow == {"steps": 8, "seconds": 0.5}
    assert plan.error is not None and plan.error.code == "boom"
    validators = {
        "request": plan.contract.request,
        "result": plan.contract.result,
        "progress": plan.contract.progress,
    }
    for case in orjson.loads(TEST_VECTORS.read_bytes())["cases"]:
        validator = validators[case["definition"]]
        assert validator is not None
        assert validator.is_valid(case["data"]) is case["valid"], case["description"]
