"""``pneumo``: one command, one sub-command per verb. Each verb lives in its own module and is
imported only when called, so ``pneumo --help`` answers without loading PyTorch."""

from __future__ import annotations

import importlib

import click

from pneumo import __version__

# command name → "module:attribute"; the order is the order of `pneumo --help`.
COMMANDS: dict[str, str] = {
    "data": "pneumo.cli.data:data",
    "train": "pneumo.cli.train:train",
    "evaluate": "pneumo.cli.evaluate:evaluate",
    "calibrate": "pneumo.cli.evaluate:calibrate",
    "compare": "pneumo.cli.evaluate:compare",
    "card": "pneumo.cli.evaluate:card",
    "explain": "pneumo.cli.explain:explain",
    "predict": "pneumo.cli.predict:predict",
    "export": "pneumo.cli.predict:export",
    "bench": "pneumo.cli.predict:bench",
    "serve": "pneumo.cli.serve:serve",
    "audit": "pneumo.cli.serve:audit",
}

HELP = {
    "data": "Audit a dataset and split it by patient.",
    "train": "Train a model from a YAML config into a bundle.",
    "evaluate": "Clinical metrics with confidence intervals, plots and an HTML report.",
    "calibrate": "Fit temperature scaling on a validation split and store it in the bundle.",
    "compare": "Compare bundles on the same images: one table, paired tests, one ROC plot.",
    "card": "Write MODEL_CARD.md into a bundle.",
    "explain": "Grad-CAM / Grad-CAM++ / occlusion heatmaps over X-rays.",
    "predict": "Batch prediction over files, folders or globs.",
    "export": "Export a bundle to ONNX (fp32 or int8) after a parity check.",
    "bench": "Inference latency and throughput on this machine.",
    "serve": "Run the web app and REST API.",
    "audit": "Read the server's audit log.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pneumo")
def main() -> None:
    """pneumo: pneumonia detection on pediatric chest X-rays.

    Decision support, not a diagnosis. The dataset is found from --data, else $PNEUMO_DATA,
    else ./data/chest_xray, else ../shared/data/chest_xray.
    """
