"""prefect.yaml and `procure serve` deploy the same flows on the same schedules."""

from __future__ import annotations

from pathlib import Path

import yaml

from procure.orchestration import DEPLOYMENTS, load_flow

ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_lists_every_deployment_procure_serves_with_the_same_schedule() -> None:
    declared = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]
    in_yaml = {
        d["name"]: (
            d["entrypoint"],
            tuple(s["cron"] for s in d.get("schedules", [])),
            d["description"],
        )
        for d in declared
    }
    in_code = {
        d.name: (d.entrypoint, (d.cron,) if d.cron else (), d.description) for d in DEPLOYMENTS
    }
    assert in_yaml == in_code


def test_every_entrypoint_names_a_flow_in_a_file_of_its_name() -> None:
    for spec in DEPLOYMENTS:
        path, function = spec.entrypoint.split(":")
        assert (ROOT / path).exists(), spec.entrypoint
        assert Path(path).stem == function, spec.entrypoint  # one flow per file, named after it
        flow = load_flow(spec)
        assert flow.name == function.replace("_", "-"), spec.entrypoint


def test_a_batch_size_below_one_is_refused_by_the_parameter_schema_runs_are_created_with() -> None:
    from prefect.utilities.callables import parameter_schema

    schemas = {spec.name: parameter_schema(load_flow(spec)).model_dump() for spec in DEPLOYMENTS}
    batched = {
        name: schema["properties"]["batch_size"]
        for name, schema in schemas.items()
        if "batch_size" in schema["properties"]
    }
    assert len(batched) >= 8
    # The Prefect UI's form and `prefect deployment run --param` check runs against it.
    assert {name: field.get("minimum") for name, field in batched.items()} == dict.fromkeys(
        batched, 1
    )
