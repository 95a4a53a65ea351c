"""Post-processing of predicted (or drawn) structures before they leave for planning.

Import-light: import the module you need, e.g. :mod:`cervicontour.postprocess.compose`
(CTV sub-structure choice) or :mod:`cervicontour.postprocess.margin` (PTV margins).
"""
