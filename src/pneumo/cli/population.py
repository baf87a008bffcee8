"""``pneumo population fit``: (re)fit a bundle's population check without touching its model."""

from __future__ import annotations

from pathlib import Path

import click

from pneumo.cli.common import data_option, emit_json, json_option, run_safely


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def population() -> None:
    """The population check ("is this film like the ones the model was validated on?") stored in a bundle.

    \b
    pneumo population fit BUNDLE --external DIR [--data ROOT]   fit and store it (population.safetensors)
    """


@population.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@data_option
@click.option("--external", type=click.Path(path_type=Path), default=None, envvar="PNEUMO_EXTERNAL",
              help="Folder with labels.csv whose set == cxr_other rows are other hospitals' frontal chest films "
                   "(default: $PNEUMO_EXTERNAL).")
@click.option("--n-fit", type=click.IntRange(20), default=1500, show_default=True,
              help="Training-split films the discriminator is fitted on.")
@click.option("--typical-target", type=click.FloatRange(0.5, 1, max_open=True), default=0.975, show_default=True,
              help="Share of validation films (under every acquisition shift) that must stay typical.")
@json_option
@run_safely
def fit(bundle, data, external, n_fit, typical_target, as_json):
    """Fit BUNDLE's population check: validated films vs other hospitals' chest films, thresholds on val."""
    from pneumo.workflows.population import fit_population  # lazy: keeps `pneumo --help` fast

    block = fit_population(bundle, data=data, external=external, n_fit=n_fit, typical_target=typical_target,
                           progress=not as_json)
    if as_json:
        emit_json(block)
        return
    v = block["val_shifted"]
    click.echo(f"{bundle}/population.safetensors: flag at P(other) > {block['flag_probability']:.3f} or distance > "
               f"{block['flag_distance']:.2f}; validation films under shifts typical {v['typical']:.3f} of {v['n']}")
    for src, r in block["held_out_sources"].items():
        click.echo(f"  held out {src}: flagged {r['flagged']:.3f}, refused {r['refused']:.3f}, typical "
                   f"{r['typical']:.3f} of {r['n']}")
    if block.get("val_originals"):
        r = block["val_originals"]
        click.echo(f"  official val originals: typical {r['typical']:.3f} of {r['n']}")
