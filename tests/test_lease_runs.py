"""scripts/lease_runs.py, the plan of one GPU call: every command it would run is one the
repository's own command lines accept, with the settings the studies promise (checked here, on
the CPU, since the plan runs only where a GPU is lent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from capslib.evaluation.cli import build_parser as evaluate_parser
from capslib.experiments import ablation, routing_study
from capslib.training.cli import build_parser as train_parser
from capslib.training.cli import config_from_args

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "lease_runs.py"
PARSERS = {
    "capslib.ablation": ablation.build_parser,
    "capslib.routing_study": routing_study.build_parser,
    "capslib.train": train_parser,
    "capslib.evaluate": evaluate_parser,
}


@pytest.fixture(scope="module")
def lease():
    spec = importlib.util.spec_from_file_location("lease_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def commands(jobs):
    for job in jobs:
        for epochs, stage in job.stages.items():
            for cmd in stage:
                module, argv = cmd[2], cmd[3:]
                yield job, epochs, module, argv


@pytest.mark.parametrize("plan", ["full_jobs", "smoke_jobs"])
def test_every_command_of_the_plan_parses(lease, plan):
    for _, _, module, argv in commands(getattr(lease, plan)()):
        args = PARSERS[module]().parse_args(argv)
        if module == "capslib.train":
            config_from_args(args).validate()


def test_the_plan_runs_what_the_issues_ask(lease):
    jobs = lease.full_jobs()
    names = [job.name for job in jobs]
    table1 = [n for n in names if n.startswith("table1_")]
    assert sorted(table1) == sorted(
        f"table1_{v}_seed{s}" for v in ("capsnet-r1-recon", "capsnet-r3-recon") for s in (0, 1, 2)
    )
    study = [n for n in names if n.startswith("routing_study_")]
    assert len(study) == len(routing_study.ROUTING_VARIANTS) * 3
    for job, epochs, module, argv in commands(jobs):
        if module in ("capslib.ablation", "capslib.routing_study"):
            args = PARSERS[module]().parse_args(argv)
            assert args.epochs == epochs and args.out.endswith(f"epochs_{epochs}")
            assert args.train_limit is None and args.test_limit is None and not args.no_affine  # full budgets
        if job.name.startswith("table1_"):
            assert min(job.stages) >= 5  # issue 24: at least 5 full epochs
        if job.name.startswith("routing_study_"):
            assert max(job.stages) == 30
    resumed = [argv for job, e, module, argv in commands(jobs) if module == "capslib.train" and e != min(job.stages)]
    assert resumed and all("--resume" in argv for argv in resumed)  # later stages continue the same run
