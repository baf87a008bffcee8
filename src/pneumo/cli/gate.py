"""``pneumo gate fit``: (re)fit a bundle's chest-X-ray gate without touching its model."""

from __future__ import annotations

from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, run_safely


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def gate() -> None:
    """The chest-X-ray gate ("is this a frontal chest radiograph?") stored in a bundle.

    \b
    pneumo gate fit BUNDLE [--data ROOT] [--external DIR]   fit and store it (gate.safetensors)
    pneumo gate copy SRC DST                                 reuse a fitted gate in another bundle
    """


@gate.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@data_option
@click.option("--external", type=click.Path(path_type=Path), default=None, envvar="PNEUMO_EXTERNAL",
              help="Folder of other-source images with labels.csv (default: $PNEUMO_EXTERNAL; none: dataset, "
                   "package images and chest-derived negatives only).")
@click.option("--classifier", type=click.Choice(["mlp", "lr"]), default="mlp", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
              show_default=True, help="Refuse when P(not a chest X-ray) is above this.")
@json_option
@run_safely
def fit(bundle, data, external, classifier, threshold, as_json):
    """Fit BUNDLE's chest-X-ray gate on the dataset's training X-rays and the external images."""
    from pneumo.inference.gate import fit_gate  # lazy: keeps `pneumo --help` fast

    block = fit_gate(bundle, data=data, external=external, classifier=classifier, threshold=threshold,
                     progress=not as_json)
    if as_json:
        emit_json(block)
        return
    ho = block["held_out"]
    click.echo(f"{bundle}/gate.safetensors: {block['classifier']}, {block['n_fit_positive']} chest / "
               f"{block['n_fit_negative']} other images, external sources {block['external']['sources'] or 'none'}; "
               f"held-out chest X-rays accepted {ho['accept_rate']:.4f} of {ho['n']}")


@gate.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@run_safely
def copy(src, dst):
    """Copy SRC bundle's gate into DST bundle (the gate does not depend on the model)."""
    from pneumo.inference.gate import copy_gate  # lazy: keeps `pneumo --help` fast

    block = copy_gate(src, dst)
    click.echo(f"{dst}/gate.safetensors: copied from {src} ({block['classifier']}, sha256 {block['sha256'][:12]})")
