"""Mutation testing of the mathematical core with mutmut (issue 12): score per module and the surviving mutants.

mutmut makes small changes to the code (a ``+`` for a ``-``, ``<`` for ``<=``, a constant off by one, a
dropped argument) and runs the tests that reach the changed function; a mutant the tests do not
notice *survives*. The score is killed / (all mutants - skipped), mutmut's own definition.

Each module runs in its own throw-away copy of the checkout (``--workdir``, default a temp folder):
mutmut 3 copies the sources into ``mutants/`` and rewrites them, so the working tree is never touched,
and a killed run leaves nothing behind. The tests of each module are a subset (the modules' own test
files, plus the proof checks that read them), run with the ``ci`` hypothesis profile (15 derandomized
examples), torch single-threaded, through mutmut's fork server (torch is not fork-safe after import).

    python benchmarks/mutation.py                      # every module (tens of minutes on 2 cores)
    python benchmarks/mutation.py --module exponents   # one module
    python benchmarks/mutation.py --mutmut /tmp/mm3/bin/mutmut --max-children 2 --json results.json

Needs mutmut >= 3.3 (``pip install mutmut``; not a dependency of the package). Prints, per module, the
counts (killed, survived, no tests, timeout, suspicious, skipped) and the score, then the total, then
the diff of every surviving mutant (``mutmut show``).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: module -> (source file, the tests that exercise it)
MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "exact": ("lora_theory/limits/exact.py", ("tests/limits/test_exact.py", "tests/limits/test_core_arguments.py")),
    "polynomial": ("lora_theory/limits/polynomial.py", ("tests/limits/test_polynomial.py", "tests/limits/test_core_arguments.py", "tests/claims/test_limits.py",
                                                        "tests/proofs_checks/test_limits_polynomial.py")),
    "features": ("lora_theory/limits/features.py", ("tests/limits/test_features.py", "tests/limits/test_core_arguments.py",
                                                    "tests/proofs_checks/test_limits_polynomial.py")),
    "approx": ("lora_theory/limits/approx.py", ("tests/limits/test_approx.py", "tests/limits/test_core_arguments.py")),
    # lowrank: its own tests plus the batched driver's fast cases (the whole of test_approx_batched.py is ~75 s a mutant)
    "lowrank": ("lora_theory/limits/lowrank.py", ("tests/limits/test_lowrank.py",
                                                  "tests/limits/test_approx_batched.py::test_batch_shape_one_is_the_single_head",
                                                  "tests/limits/test_approx_batched.py::test_causal_moment_source_takes_consecutive_blocks",
                                                  "tests/limits/test_approx_batched.py::test_shared_factor_bound_is_the_sum_of_element_bounds",
                                                  "tests/limits/test_approx_batched.py::test_random_features_batched_equals_per_head_loop")),
    "plan": ("lora_theory/limits/plan.py", ("tests/limits/test_plan.py", "tests/limits/test_core_arguments.py")),
    "lora_ga_init": ("lora_theory/lora_ga/init.py", ("tests/lora_ga/test_init.py", "tests/lora_ga/test_init_arguments.py", "tests/proofs_checks/test_lora_ga.py")),
    "exponents": ("lora_theory/lora_plus/exponents.py", ("tests/lora_plus/test_exponents.py", "tests/proofs_checks/test_lora_plus.py")),
}

#: tests that measure memory in a child interpreter (lora_theory._memory): that child imports the mutated copy without
#: mutmut's configuration and fails, so mutmut's stats run fails and nothing is checked; they test peak bytes, not the math
DESELECT = ("tests/limits/test_plan.py::test_predicted_bytes_track_measured_peak", "tests/limits/test_approx.py::test_never_forms_L_by_L")

#: mutmut's exit codes (mutmut.stats.status_by_exit_code)
_STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious", 36: "timeout",
           -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked", -11: "segfault", -9: "segfault", 37: "killed"}


def _copy_checkout(dest: Path) -> None:
    """The tracked and untracked-but-not-ignored files of the checkout (what git would commit), copied to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def _setup_cfg(source: str, tests: tuple[str, ...]) -> str:
    lines = ["[mutmut]", "source_paths = lora_theory", f"only_mutate = {source}", "also_copy =", "    proofs_checks/",
             "pytest_add_cli_args_test_selection ="] + [f"    {t}" for t in tests] + [
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -q"] + [f"    --deselect={t}" for t in DESELECT] + [
             "process_isolation = forkserver",
             # warmup "collect" imports the test modules in the server, whose decorators run torch ops (make_instance in
             # @example): the forked workers then hung in every mutant whose tests all pass (survivors became "timeouts")
             "forkserver_warmup = none",
             # mutmut's wall timeout is (estimated seconds + constant) x multiplier: on a shared, loaded machine a 1-s test
             # set can take > 20 s wall, and the default constant (1 s) turned such survivors into spurious "timeouts"
             "timeout_constant = 30"]
    return "\n".join(lines) + "\n"


def run_module(name: str, mutmut: str, workdir: Path, max_children: int, rerun_survivors: bool = False, sample: int | None = None,
               seed: int = 0) -> dict:
    """Mutate one module in a fresh copy; returns counts, score, survivors (name and diff) and seconds.

    ``rerun_survivors``: reuse the copy of an earlier run in ``workdir`` (its mutants and results), refresh
    the checkout's files in it (the new tests), and run again only the mutants that survived, timed out or had no tests.
    """
    source, tests = MODULES[name]
    work = workdir / name
    meta = work / "mutants" / f"{source}.meta"
    if rerun_survivors and meta.exists():
        _copy_checkout(work)
        data = json.loads(meta.read_text())
        data["exit_code_by_key"] = {k: (None if _STATUS.get(v) in ("survived", "no tests", "suspicious", "timeout") else v)
                                    for k, v in data["exit_code_by_key"].items()}
        meta.write_text(json.dumps(data))
        for rel in tests:  # mutmut runs the tests from its own copy under mutants/
            src = ROOT / rel.split("::")[0]
            shutil.copy2(src, work / "mutants" / rel.split("::")[0])
    else:
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _copy_checkout(work)
    (work / "setup.cfg").write_text(_setup_cfg(source, tests))
    env = {**os.environ, "LORA_THEORY_PROFILE": "ci", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(work)}
    t0 = time.perf_counter()
    chosen = None
    if sample:  # generate the mutants and the test stats (a filter that matches nothing stops there), then run a seeded sample
        subprocess.run([mutmut, "run", "--max-children", str(max_children), "no-such-mutant-*"], cwd=work, env=env, capture_output=True, text=True)
        if meta.exists():
            names = sorted(json.loads(meta.read_text())["exit_code_by_key"])
            chosen = sorted(random.Random(seed).sample(names, min(sample, len(names))))
    run = subprocess.run([mutmut, "run", "--max-children", str(max_children), *(chosen or [])], cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if not meta.exists():
        return {"module": name, "error": (run.stdout + run.stderr)[-3000:], "seconds": seconds}
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    population = len(codes)
    if all(v is None for v in codes.values()):  # mutmut's stats or clean-test run failed: it checked nothing
        return {"module": name, "error": "mutmut checked no mutant:\n" + (run.stdout + run.stderr)[-3000:], "seconds": time.perf_counter() - t0}
    if chosen is not None:
        codes = {k: codes[k] for k in chosen}
    counts: dict[str, int] = {}
    survivors = []
    for mutant, code in sorted(codes.items()):
        status = _STATUS.get(code, "suspicious")
        counts[status] = counts.get(status, 0) + 1
        if status in ("survived", "no tests", "suspicious", "not checked"):
            diff = subprocess.run([mutmut, "show", mutant], cwd=work, env=env, capture_output=True, text=True).stdout
            survivors.append({"mutant": mutant, "status": status, "diff": diff})
    tested = len(codes) - counts.get("skipped", 0)
    score = (counts.get("killed", 0) + counts.get("timeout", 0)) / tested if tested else float("nan")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    version = subprocess.run([mutmut, "--version"], cwd=work, env=env, capture_output=True, text=True).stdout.strip()
    return {"module": name, "source": source, "tests": list(tests), "counts": counts, "mutants": len(codes), "score": score,
            "survivors": survivors, "seconds": seconds, "commit": commit, "mutmut": version, "population": population,
            "sampled": chosen is not None, "seed": seed,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", action="append", choices=sorted(MODULES), help="only these modules (repeatable; default all)")
    ap.add_argument("--mutmut", default=shutil.which("mutmut") or "mutmut", help="the mutmut executable (>= 3.3)")
    ap.add_argument("--max-children", type=int, default=2, help="parallel mutant workers")
    ap.add_argument("--workdir", type=Path, default=None, help="where the throw-away copies go (default: a temp folder, removed)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON (merged into the file if it exists; "
                    "benchmarks/mutation_limits.json is what benchmarks/README.md's table is generated from)")
    ap.add_argument("--sample", type=int, default=None, help="run only a seeded random sample of this many mutants per module "
                    "(the score is then an estimate: report its interval)")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed")
    ap.add_argument("--rerun-survivors", action="store_true",
                    help="with --workdir of an earlier run: copy the new tests in and run only its survivors again")
    args = ap.parse_args(argv)
    names = args.module or list(MODULES)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lora-theory-mutation-"))
    results = []
    try:
        for name in names:
            res = run_module(name, args.mutmut, workdir, args.max_children, args.rerun_survivors, args.sample, args.seed)
            results.append(res)
            if "error" in res:
                print(f"{name}: mutmut failed after {res['seconds']:.0f} s:\n{res['error']}", flush=True)
                continue
            c = res["counts"]
            print(f"{name:13s} {res['mutants']:4d} mutants: killed {c.get('killed', 0)}, survived {c.get('survived', 0)}, no tests {c.get('no tests', 0)}, "
                  f"timeout {c.get('timeout', 0)}, suspicious {c.get('suspicious', 0)}, skipped {c.get('skipped', 0)}: score {res['score']:.1%} "
                  f"({res['seconds']:.0f} s)", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = [r for r in results if "error" not in r]
    killed = sum(r["counts"].get("killed", 0) + r["counts"].get("timeout", 0) for r in ok)
    tested = sum(r["mutants"] - r["counts"].get("skipped", 0) for r in ok)
    print(f"total: {killed} of {tested} mutants killed: score {killed / tested:.1%}" if tested else "total: no mutants ran")
    for r in ok:
        for s in r["survivors"]:
            print(f"\n--- {r['module']}: {s['mutant']} ({s['status']})\n{s['diff'].strip()}")
    if args.json:  # merged into an existing file: the modules run now replace their earlier records
        kept = [r for r in (json.loads(args.json.read_text()) if args.json.exists() else []) if r["module"] not in {x["module"] for x in results}]
        args.json.write_text(json.dumps(kept + results, indent=1) + "\n")
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
