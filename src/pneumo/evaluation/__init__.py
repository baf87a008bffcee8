"""Honest evaluation: metrics at the bundle's saved operating point with patient-bootstrap CIs,
calibration, paired model comparison and model cards.

Modules: :mod:`metrics` (scikit-learn metrics, ECE), :mod:`stats` (vectorised patient bootstrap,
DeLong), :mod:`plots`, :mod:`report` (self-contained HTML), :mod:`runner` (``evaluate_bundle``),
:mod:`compare` (``compare_bundles``), :mod:`calibration` (``calibrate_bundle``), :mod:`card`
(``write_card``). Import the submodule you need; nothing heavy is imported here.
"""
