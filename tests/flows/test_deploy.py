"""The scheduled deployment carries the config's cron, time zone and parameters."""

from __future__ import annotations

import yaml

from flows.deploy import build_deployment


def _config(tmp_path, cron, timezone="UTC", name="nightly"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": [{"name": "als", "type": "als"}],
                "schedule": {"cron": cron, "timezone": timezone, "deployment_name": name},
            }
        )
    )
    return str(path)


def test_deployment_carries_cron_timezone_and_config(tmp_path):
    config_path = _config(tmp_path, "15 2 * * 1-5", "Europe/Stockholm", "weekdays")
    deployment = build_deployment(config_path)
    assert deployment.name == "weekdays"
    assert [s.schedule.cron for s in deployment.schedules] == ["15 2 * * 1-5"]
    assert deployment.schedules[0].schedule.timezone == "Europe/Stockholm"
    assert deployment.parameters == {"config_path": config_path}
    limit = deployment.concurrency_limit
    assert getattr(limit, "limit", limit) == 1


def test_another_config_another_schedule(tmp_path):
    deployment = build_deployment(_config(tmp_path, "0 */6 * * *"))
    assert deployment.schedules[0].schedule.cron == "0 */6 * * *"
