"""Evaluation of singer embeddings as in the paper's section 4 (see README.md here).

`runner.evaluate` is the library entry point; `python -m model evaluate` is its command line.
Modules: metrics (accuracy, precision/recall at k, mAP), splits (evaluation sets), gmm_ubm
(baseline), snr (re-mixing), cache (per-clip arrays), plots (t-SNE, SNR curves), report.
"""
