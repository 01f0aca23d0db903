"""Analysis: alignment metrics, the one alignment pipeline, trajectory comparisons, geometry and plots.

==================  ===============================================================================
module              what it holds
==================  ===============================================================================
``metrics``         Pearson / Spearman of off-diagonal pairs, top-k neighbour overlap, strong- and
                    weak-pair precision, ``alignment_metrics`` (host-side numpy on (n, n) matrices)
``limits``          every metric's ceiling (a perfect, tie-broken embedding) and chance level (closed forms)
``significance``    Mantel and partial Mantel permutation tests, token bootstrap of correlations
``alignment``       ``AlignmentConfig``, ``TokenSet``, ``Comparison``, ``compare``,
                    ``AlignmentTracker`` (the metrics-over-training hook), ``strong_pair_finding``,
                    ``side_specificity`` (W_E / W_U vs phi_next / phi_pre), ``correlation_difference``
``trajectories``    relative errors between weight trajectories, growth, singular values of ``U E``
``geometry``        ``pca_projection`` (fixed basis), ``cluster_order`` (heatmap order)
``fourier``         per-unit DFT / Walsh-Hadamard spectra of ``(U, V, W)``: dominant frequency,
                    sparsity, frequency matching, phase alignment, ``unit_diagnostics`` (MODADD 4)
``plots``           plot functions drawing into a given ``Axes`` and the atomic ``save``
==================  ===============================================================================

Names are imported on first use (``plots`` pulls in matplotlib only when asked for).
"""

from probsig_jax._lazy import lazy_exports

_METRICS = ("cosine_similarity_matrix", "offdiagonal", "pearson", "spearman", "topk_neighbour_overlap",
            "strong_pair_precision", "weak_pair_precision", "strong_pair_correlation", "alignment_metrics",
            "topk_inclusion", "top_inclusion", "midranks", "snap_ties")
_ALIGNMENT = ("AlignmentConfig", "AlignmentTracker", "Comparison", "TokenSet", "alignment_series", "compare",
              "compare_one", "similarity_from_gram", "strong_pair_finding", "weight_similarities", "side_specificity",
              "correlation_difference")
_EXPORTS = {
    **{name: "probsig_jax.analysis.metrics" for name in _METRICS},
    **{name: "probsig_jax.analysis.alignment" for name in _ALIGNMENT},
    **{name: "probsig_jax.analysis.trajectories" for name in
       ("relative_error", "joint_relative_error", "norm_growth", "last_index_within", "product_singular_values")},
    "metric_ceilings": "probsig_jax.analysis.limits",
    "metric_chance_levels": "probsig_jax.analysis.limits",
    **{name: "probsig_jax.analysis.significance" for name in
       ("mantel_test", "partial_mantel_test", "bootstrap_correlations", "bootstrap_interval", "partial_correlation",
        "pair_correlation_matrix")},
    "pca_projection": "probsig_jax.analysis.geometry",
    "cluster_order": "probsig_jax.analysis.geometry",
    **{name: "probsig_jax.analysis.fourier" for name in
       ("unit_spectra", "fold_frequencies", "dominant_frequency", "sparsity", "frequency_matching", "phase_alignment",
        "mean_resultant_length", "walsh_hadamard_spectra", "dominant_walsh_index", "walsh_sparsity",
        "unit_diagnostics", "summarise_units", "frequency_agreement")},
    "plots": "probsig_jax.analysis.plots",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
