"""Operations on contours, predicted or drawn, before they leave for planning: a CTV composed
from the parts the clinician chooses (:mod:`.compose`), margins (:mod:`.margin`), a compound split
into its parts (:mod:`.parts`), and the "review closely" flags (:mod:`.flags`).

Import-light: import the module you need, e.g. :mod:`cervicontour.contours.compose`.
"""
