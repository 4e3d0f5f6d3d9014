"""`yoloq wandb-report --project yoloq [--group yolov5n-shapes]`: the method comparison as a W&B report, built
with wandb-workspaces from what yoloq logs: runs grouped by model, method and bit width (the config's
`model.name`, `method.name` and `w_bits`), the final QAT and QC mAP as bars with the seed spread, the QAT mAP per
epoch, and the run comparer. `--dry-run` prints the report's spec instead of saving it (no network); saving needs
W&B online (`wandb login`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from types import SimpleNamespace

FINAL = ("qat/mAP50-95", "folded/mAP50-95", "fp/mAP50-95")  # summary keys (engine/pipeline.summary_of)
PER_EPOCH = ("qat-epoch/mAP50-95", "qat-epoch/oscillating_pct")


def build_report(project: str, entity: str | None, group: str | None, title: str):
    import wandb_workspaces.reports.v2 as wr

    runs = wr.Runset(entity=entity or "", project=project, name=f"group {group}" if group else "all runs",
                     filters=f"Group = '{group}'" if group else "",
                     groupby=["config.model.name", "config.method.name", "config.w_bits"])
    # no panel-level groupby: the panels follow the run set's grouping, so one bar or line is one model, method
    # and bit width (a panel grouped by method alone would pool bit widths, and the models of other_models)
    bars = [wr.BarPlot(title=key, metrics=[wr.SummaryMetric(key)], groupby_aggfunc="mean",
                       groupby_rangefunc="stddev") for key in FINAL]
    lines = [wr.LinePlot(title=key, x="Step", y=[key], groupby_aggfunc="mean", groupby_rangefunc="stddev")
             for key in PER_EPOCH]
    blocks = [
        wr.H1("Methods compared"),
        wr.P("One bar per model, method and bit width (mean over seeds, whiskers: std over seeds): the runs are "
             "grouped by model.name, method.name and w_bits, so every seed of one such cell is one group. "
             "compare.md in the sweep folder holds the same numbers with paired confidence intervals."),
        wr.PanelGrid(runsets=[runs], panels=bars + lines + [wr.RunComparer(diff_only="split")]),
    ]
    kwargs = {"entity": entity} if entity else {}
    return wr.Report(project=project, title=title, description="yoloq method comparison", blocks=blocks, **kwargs)


class RecordedApi:
    """A stand-in for W&B's API that answers what saving a report asks (the project's id, its existence, the
    upsert) from memory and records every call: for --dry-run and the tests, never the network."""

    def __init__(self, entity: str = "offline", projects: tuple[str, ...] = ()):
        self.default_entity = entity
        self.client = SimpleNamespace(app_url="https://wandb.ai")
        self.existing = list(projects)
        self.calls: list[tuple[str, dict]] = []

    def projects(self, entity):
        return [SimpleNamespace(name=n) for n in self.existing]

    def create_project(self, name, entity):
        self.calls.append(("create_project", {"name": name, "entity": entity}))
        self.existing.append(name)

    def execute(self, query: str, variables) -> dict:
        name = query.split("(")[0].split()[-1]  # the operation's name, e.g. upsertView
        self.calls.append((name, dict(variables or {})))
        if "internalId" in query:
            return {"project": {"internalId": f"project-{variables['projectName']}"}}
        if "upsertView" in query:  # the saved view, as the server returns it
            v = variables
            view = {"id": f"report-{len(self.calls)}", "name": v["name"], "displayName": v["displayName"],
                    "description": v["description"], "spec": json.loads(v["spec"]),
                    "project": {"entityName": v["entityName"], "name": v["projectName"]}}
            return {"upsertView": {"view": view}}
        raise RuntimeError(f"the recorded API does not answer {name}")


@contextlib.contextmanager
def recorded_api(api: RecordedApi):
    """wandb-workspaces' calls go to `api` while inside."""
    import wandb_workspaces.reports.v2.interface as interface

    saved = interface._get_api, interface.execute_graphql
    interface._get_api = lambda: api
    interface.execute_graphql = lambda _api, query, variables=None: api.execute(query, variables)
    try:
        yield api
    finally:
        interface._get_api, interface.execute_graphql = saved


def report_spec(report) -> dict:
    return json.loads(report._to_model().spec.model_dump_json(by_alias=True, exclude_none=True))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="yoloq wandb-report", description=__doc__.splitlines()[0])
    p.add_argument("--project", default="yoloq", help="W&B project the runs were logged to (logger.wandb.project)")
    p.add_argument("--entity", default=None, help="W&B entity (default: your default entity)")
    p.add_argument("--group", default=None, help="only the runs of this group (logger.wandb.group, e.g. yolov5n-shapes)")
    p.add_argument("--title", default="yoloq: methods compared")
    p.add_argument("--dry-run", action="store_true", help="print the report spec as JSON instead of saving it")
    args = p.parse_args(argv)
    if args.dry_run:
        with recorded_api(RecordedApi(args.entity or "offline")):
            print(json.dumps(report_spec(build_report(args.project, args.entity, args.group, args.title)), indent=1))
        return 0
    try:
        report = build_report(args.project, args.entity, args.group, args.title)
        report.save()
    except Exception as e:  # noqa: BLE001 - no login, no network, no such project: one line
        print(f"error: could not save the W&B report ({str(e).splitlines()[0][:200] if str(e) else type(e).__name__}): "
              "log in with `wandb login` and check --project/--entity, or use --dry-run", file=sys.stderr)
        return 2
    print(f"saved {report.url}")
    return 0
