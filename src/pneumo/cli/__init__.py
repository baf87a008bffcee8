"""``pneumo``: one command, one sub-command per verb. Each verb lives in its own module and is
imported only when called, so ``pneumo --help`` answers without loading PyTorch.

The verbs' own imports of the library sit inside their function bodies on purpose: ``pneumo VERB
--help`` and a mistyped option are answered by click before PyTorch, MONAI, Lightning or ONNX Runtime
load (seconds on a cold start), and the torch-free verbs (``pneumo audit monitor``) never load them."""

from __future__ import annotations

import importlib

import click

from pneumo.version import __version__

# command name → "module:attribute"; the order is the order of `pneumo --help`.
COMMANDS: dict[str, str] = {
    "data": "pneumo.cli.data:data",
    "train": "pneumo.cli.train:train",
    "build": "pneumo.cli.build:build",
    "evaluate": "pneumo.cli.evaluate:evaluate",
    "calibrate": "pneumo.cli.evaluate:calibrate",
    "compare": "pneumo.cli.evaluate:compare",
    "card": "pneumo.cli.evaluate:card",
    "explain": "pneumo.cli.explain:explain",
    "predict": "pneumo.cli.predict:predict",
    "export": "pneumo.cli.predict:export",
    "gate": "pneumo.cli.gate:gate",
    "population": "pneumo.cli.population:population",
    "policy": "pneumo.cli.policy:policy",
    "bench": "pneumo.cli.predict:bench",
    "serve": "pneumo.cli.serve:serve",
    "audit": "pneumo.cli.serve:audit",
    "dicom-node": "pneumo.cli.dicom_node:dicom_node",
}

HELP = {
    "data": "Audit a dataset and split it by patient.",
    "train": "Train a model from a YAML config into a bundle.",
    "build": "Make a shippable bundle from a recipe: train members, gate, calibrate, ONNX, evaluate, card.",
    "evaluate": "Clinical metrics with confidence intervals, plots and an HTML report.",
    "calibrate": "Fit the probability calibration (Platt by default, or temperature only) and store it in the bundle.",
    "compare": "Compare bundles on the same images: one table, paired tests, one ROC plot.",
    "card": "Write MODEL_CARD.md into a bundle.",
    "explain": "Evidence heatmaps over X-rays (occlusion by default; Grad-CAM family, RISE, gradients).",
    "predict": "Batch prediction over files, folders or globs.",
    "export": "Export a bundle to ONNX (fp32 or int8) after a parity check.",
    "population": "Fit the population check (is the film like the validated ones?) into a bundle.",
    "policy": "Show or override (recorded) the DICOM header policy in a bundle.",
    "gate": "Fit the chest-X-ray gate (is it a frontal chest radiograph?) into a bundle.",
    "bench": "Inference latency and throughput on this machine.",
    "serve": "Run the web app and REST API.",
    "audit": "Read the server's audit log.",
    "dicom-node": "C-STORE node beside a PACS: SR + heatmap Secondary Capture back into the study.",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)  # a broken verb fails loudly, never "No such command"

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
