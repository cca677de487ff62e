"""deepnomo: imaging signatures and clinical records to validated prognostic nomograms.

The Python side: cohort tables and the bridge to R, synthetic study cohorts,
image preprocessing, radiomics, and survival deep learning.
"""

__version__ = "0.1.0"
