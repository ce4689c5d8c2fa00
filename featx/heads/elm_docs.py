"""The shared parameter and attribute docs of :class:`featx.heads.elm.ELMClassifier` and
:class:`~featx.heads.elm.ELMRegressor` (kept apart so elm.py holds code)."""

PARAMS_DOC = """
    Parameters
    ----------
    n_hidden : int, default=1000
        Number of random hidden units. Cost of ``fit`` is ``O(n_samples * n_hidden *
        (n_features + n_hidden) + n_hidden**3)``, memory ``O(n_hidden**2 + chunk_size * n_hidden)``.
        1000 suits frozen CNN features (a few hundred to a few thousand dimensions) and data
        sets of hundreds to tens of thousands of rows; fit time grows with ``n_hidden**2``.

    activation : {"tanh", "sigmoid", "relu", "rbf"}, default="tanh"
        Hidden-unit non-linearity. "tanh", "sigmoid" and "relu" apply to a random projection
        ``z @ hidden_weights_ + hidden_bias_``. "rbf" is a Gaussian of the distance to
        ``n_hidden`` centers drawn with replacement from the (scaled) training rows, with
        probability proportional to ``sample_weight`` (the draw does not depend on the row
        order); width rule: ``sigma`` = median distance between distinct centers (at most 500
        of them), ``gamma_ = weight_scale**2 / (2 * sigma**2)``. "rbf" wants a smaller
        ``alpha`` than the projection units (about 1).

    alpha : float, default=100.0
        Ridge penalty on the output weights ``coef_`` (the intercept is not penalized). As in
        :class:`~sklearn.linear_model.Ridge` it adds to a sum (not a mean) of weighted squared
        errors, so the same ``alpha`` regularizes less as the number of samples grows. The
        default is strong on purpose: with 1000 units and a few hundred to a few thousand
        samples, weaker penalties overfit (measured on frozen EfficientNet-Lite0 features of
        BreastMNIST and of chest X-rays, and on sklearn's digits). Tune it on a log grid, e.g.
        ``[1, 10, 100, 1000]``.

    weight_scale : float, default=1.0
        Spread of the random hidden layer. Projection units draw weights from
        ``N(0, weight_scale**2 / n_features)`` and biases from ``N(0, weight_scale**2)``, so on
        scaled inputs each pre-activation has a standard deviation of about ``weight_scale``:
        larger values make units more non-linear (saturating), smaller ones more linear. For
        "rbf" it multiplies the inverse width.

    input_scaling : {"global", "standard"} or None, default="global"
        How inputs are scaled before the hidden layer, from (weighted) training statistics
        stored in ``mean_`` and ``scale_``. "global": centered per feature and divided by one
        common scale, the root mean feature variance; it keeps the features' relative scales,
        which suits CNN features (many channels are nearly silent and should stay so).
        "standard": per feature, to zero mean and unit variance (constant features are only
        centered); better when features come in unrelated units, e.g. handcrafted and deep
        features fused without a scaler. None: inputs are used as given (then
        ``weight_scale`` must suit their scale). Either way no external scaler is needed; a
        :class:`~sklearn.preprocessing.StandardScaler` before the ELM is harmless.

    chunk_size : int, default=2048
        Rows per block when computing the hidden layer and accumulating the normal
        equations (and when predicting). Only changes memory use and speed, not the result
        beyond float rounding.

    device : str, default="cpu"
        "cpu": NumPy/SciPy. "cuda" or "cuda:N": the hidden layer and the ``H^T W H``
        accumulation run in torch on that GPU, in float64 (the final ``n_hidden x n_hidden``
        solve stays in SciPy on the CPU). "auto": "cuda" if torch sees a GPU, else "cpu".
        "torch:<device>" runs the torch code on any torch device, e.g. "torch:cpu". torch is
        imported only when a torch device is used. Fitted attributes are NumPy arrays either
        way, so the model pickles and predicts on any machine (with a matching ``device``).

    random_state : int, RandomState instance or None, default=None
        Seeds the random hidden layer (drawn with
        :func:`~sklearn.utils.check_random_state`). Pass an int for reproducible results.
"""

ATTRS_DOC = """
    n_features_in_ : int
        Number of features seen during fit.

    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during fit; only when X has string feature names.

    mean_, scale_ : ndarray of shape (n_features_in_,)
        Input scaling: the hidden layer sees ``(X - mean_) / scale_``.

    hidden_weights_ : ndarray of shape (n_features_in_, n_hidden)
        Random input weights (not for "rbf").

    hidden_bias_ : ndarray of shape (n_hidden,)
        Random hidden biases (not for "rbf").

    centers_ : ndarray of shape (n_hidden, n_features_in_)
        RBF centers in scaled input space (only for "rbf").

    gamma_ : float
        RBF inverse width (only for "rbf").

    intercept_ : ndarray of shape (n_outputs,)
        Unpenalized output bias.
"""
