# Handcrafted (radiomic) signature from a wide feature table: reader
# agreement, scaling, univariate and correlation filters, LASSO Cox inside a
# repeated k-fold scheme; everything learned on training and locked.

#' Radiomic signature with LASSO Cox
#'
#' Fits a signature on the training cohort only, in this order:
#' 1. **Reader agreement** (when `reader2` is given): for each feature the
#'    intraclass correlation between the two readers' values on the patients
#'    both measured, ICC(2,1) = two-way random effects, absolute agreement,
#'    single rater (Shrout & Fleiss 1979; `psych::ICC()`, row `ICC2`); features
#'    with ICC <= `icc_threshold` are dropped.
#' 2. **z-scoring** with the training means and standard deviations (kept in
#'    the object; constant features are dropped).
#' 3. **Univariate Cox filter**: Wald p of each z-scored feature in a
#'    one-feature `survival::coxph` model < `p_threshold`.
#' 4. **Correlation filter**: features are taken in order of increasing
#'    univariate p and a feature is kept only if its absolute Pearson
#'    correlation with every feature already kept is <= `cor_threshold`; so of
#'    each highly correlated pair the one with the lower p stays.
#' 5. **LASSO Cox in repeated k-fold CV** (the scheme of study multiscale):
#'    the training patients are split `repeats` times into `k` folds (seeded);
#'    on each k-1 folds a LASSO Cox model is fit with [glmnet::cv.glmnet()]
#'    (`family = "cox"`, `nfolds` inner folds, seeded fold ids, penalty
#'    `lambda`), and scored on the held-out fold by Harrell's C
#'    ([survival::concordance()]). Of the `repeats * k` models with at least
#'    one feature, the one whose held-out C is closest to the mean held-out C
#'    is kept as the signature (ties: the first).
#'
#' Steps 1-4 and the selection rule of step 5 are written here: the ICC from
#' the two-way ANOVA mean squares of all features at once (equal to
#' `psych::ICC()`), the one-feature Cox fits with the fitter of
#' [survival::coxph()]; the LASSO fits are [glmnet::cv.glmnet()]'s. The signature of a patient is
#' \eqn{\sum_j \beta_j (x_j - \bar x_j) / s_j} with the locked training
#' \eqn{\bar x_j, s_j} (higher = higher risk).
#'
#' @param features Training feature table: an `id` column and numeric
#'   feature columns, one row per patient.
#' @param data Training cohort table with the `id` column and the endpoint
#'   columns; every patient of `data` must have features.
#' @param endpoint Endpoint name (`<endpoint>_time`, `<endpoint>_event`).
#' @param id Name of the patient identifier column in both tables.
#' @param reader2 Optional second reader's feature table (same `id` and
#'   feature columns, any subset of patients, at least 5).
#' @param icc_threshold,p_threshold,cor_threshold Filter thresholds.
#' @param nfolds Inner cross-validation folds of `cv.glmnet`.
#' @param repeats,k Outer repeated k-fold scheme (`repeats` x `k`-fold).
#' @param seed Seed of all random splits (the caller's random state is restored).
#' @param lambda `"lambda.min"` or `"lambda.1se"`.
#' @param cores Processes for the `repeats * k` LASSO fits (forked with
#'   [parallel::mclapply()]; use 1 on Windows). All fold ids are drawn from the
#'   seeded stream before the fits, so the result does not depend on `cores`.
#' @param lambda_min_ratio Smallest penalty of each LASSO path as a fraction
#'   of the largest (glmnet's `lambda.min.ratio`). glmnet's own default when
#'   patients outnumber features (1e-4) runs the Cox path close to the
#'   unpenalised fit, where coordinate descent crawls; the selected penalty
#'   lies far above 0.02 * lambda_max in practice, so the default here costs
#'   nothing in the chosen model and makes the repeated CV ~30x faster.
#' @param ... Passed to [glmnet::cv.glmnet()].
#' @return An object of class `radiomic_signature`: `coefficients` (named, on
#'   the z-scale), `center`, `scale` (training means / SDs of those features),
#'   `stages` (feature names kept after each stage), `icc` (per feature, or
#'   `NULL`), `univariate` (data frame `feature`, `hr`, `p_value`), `cv`
#'   (data frame `repeat`, `fold`, `n_features`, `c_index`, `chosen`), `id`.
#' @references Shrout PE, Fleiss JL (1979). Intraclass correlations: uses in
#'   assessing rater reliability. Psychol Bull 86:420-428. Tibshirani R (1997).
#'   The lasso method for variable selection in the Cox model. Stat Med
#'   16:385-395.
#' @seealso [predict.radiomic_signature()]
#' @export
radiomic_signature <- function(features, data, endpoint, id = "patient_id", reader2 = NULL,
                               icc_threshold = 0.75, p_threshold = 0.05, cor_threshold = 0.85,
                               nfolds = 10, repeats = 100, k = 3, seed = 1,
                               lambda = c("lambda.min", "lambda.1se"), cores = 1L,
                               lambda_min_ratio = 0.02, ...) {
  cn <- "radiomic_signature"
  lambda <- match.arg(lambda)
  ep <- endpoint_columns(data, endpoint, cn)
  x <- feature_matrix(features, id, cn, "features")
  for (arg in c("nfolds", "repeats", "k", "cores")) {
    v <- get(arg)
    if (!is.numeric(v) || length(v) != 1L || v < 1 || v != round(v)) {
      stop(sprintf("radiomic_signature(): `%s` must be one positive whole number", arg),
           call. = FALSE)
    }
  }
  if (k < 2) stop("radiomic_signature(): `k` must be at least 2", call. = FALSE)
  if (!id %in% names(data)) {
    stop(sprintf("radiomic_signature(): `data` has no id column `%s`", id), call. = FALSE)
  }
  ids <- as.character(data[[id]])
  if (anyDuplicated(ids)) {
    stop(sprintf("radiomic_signature(): duplicated `%s` in `data`: %s", id,
                 ids[duplicated(ids)][1]), call. = FALSE)
  }
  missing_ids <- setdiff(ids, rownames(x))
  if (length(missing_ids)) {
    stop(sprintf("radiomic_signature(): %d patient(s) of `data` have no row in `features` (%s)",
                 length(missing_ids), paste(utils::head(missing_ids, 3), collapse = ", ")),
         call. = FALSE)
  }
  x <- x[ids, , drop = FALSE]
  y_time <- data[[ep$time]]
  y_event <- data[[ep$event]]
  if (anyNA(y_time) || anyNA(y_event)) {
    stop(sprintf("radiomic_signature(): missing values in `%s` / `%s`", ep$time, ep$event),
         call. = FALSE)
  }
  if (any(y_time <= 0)) {
    stop(sprintf("radiomic_signature(): `%s` must be > 0 for the Cox LASSO", ep$time),
         call. = FALSE)
  }
  if (sum(y_event) < 2 * k) {
    stop(sprintf("radiomic_signature(): %d events are too few for %d-fold CV", sum(y_event), k),
         call. = FALSE)
  }
  stages <- list(input = colnames(x))

  icc <- NULL
  if (!is.null(reader2)) {
    x2 <- feature_matrix(reader2, id, cn, "reader2")
    absent <- setdiff(colnames(x), colnames(x2))
    if (length(absent)) {
      stop(sprintf("radiomic_signature(): `reader2` lacks feature column(s) %s",
                   paste(utils::head(absent, 3), collapse = ", ")), call. = FALSE)
    }
    both <- intersect(rownames(x), rownames(x2))
    if (length(both) < 5L) {
      stop(sprintf("radiomic_signature(): only %d patient(s) measured by both readers (need 5)",
                   length(both)), call. = FALSE)
    }
    icc <- icc_agreement(x[both, , drop = FALSE], x2[both, colnames(x), drop = FALSE])
    x <- x[, !is.na(icc) & icc > icc_threshold, drop = FALSE]
  }
  stages$icc <- colnames(x)

  center <- colMeans(x)
  scale <- apply(x, 2, stats::sd)
  x <- x[, scale > 0, drop = FALSE]
  center <- center[colnames(x)]
  scale <- scale[colnames(x)]
  z <- sweep(sweep(x, 2, center, "-"), 2, scale, "/")
  stages$scaled <- colnames(z)
  if (!ncol(z)) stop("radiomic_signature(): no feature passed the ICC filter", call. = FALSE)

  y <- survival::Surv(y_time, y_event)
  uni <- univariate_cox_wald(z, y)
  kept <- uni$feature[uni$p_value < p_threshold]
  stages$univariate <- kept
  if (!length(kept)) {
    stop(sprintf("radiomic_signature(): no feature has univariate p < %g", p_threshold),
         call. = FALSE)
  }
  kept <- kept[order(uni$p_value[match(kept, uni$feature)])]
  r <- abs(stats::cor(z[, kept, drop = FALSE]))
  keep <- logical(length(kept))
  for (i in seq_along(kept)) keep[i] <- !any(r[i, which(keep)] > cor_threshold)
  kept <- kept[keep]
  stages$correlation <- kept
  if (length(kept) < 2L) {
    stop(sprintf(paste0("radiomic_signature(): only %d feature after the correlation filter; ",
                        "LASSO needs at least 2"), length(kept)), call. = FALSE)
  }

  cv <- with_seed(seed, lasso_repeated_cv(z[, kept, drop = FALSE], y, nfolds, repeats, k, lambda,
                                          cores, lambda.min.ratio = lambda_min_ratio, ...))
  ok <- cv$table$n_features > 0
  if (!any(ok)) stop("radiomic_signature(): LASSO kept no feature in any CV model", call. = FALSE)
  target <- mean(cv$table$c_index[ok])
  dist <- abs(cv$table$c_index - target)
  dist[!ok] <- Inf
  best <- which.min(dist)
  cv$table$chosen <- seq_len(nrow(cv$table)) == best
  beta <- cv$coefs[[best]]
  beta <- beta[beta != 0]
  stages$lasso <- names(beta)
  structure(list(coefficients = beta, center = center[names(beta)], scale = scale[names(beta)],
                 stages = stages, icc = icc, univariate = uni, cv = cv$table,
                 mean_cv_c_index = target, id = id, endpoint = endpoint),
            class = "radiomic_signature")
}

#' ICC(2,1) of two readers for every feature at once
#'
#' Two-way ANOVA of the n x 2 table of one feature (subjects x readers):
#' with \eqn{d_i} the difference between the readers and \eqn{m_i} their
#' mean, \eqn{MS_R = 2 \sum (m_i - \bar m)^2 / (n - 1)},
#' \eqn{MS_C = n \bar d^2 / 2}, \eqn{MS_E = \sum (d_i - \bar d)^2 / (2 (n - 1))}
#' and \eqn{ICC(2,1) = (MS_R - MS_E) / (MS_R + MS_E + 2 (MS_C - MS_E) / n)}
#' (Shrout & Fleiss 1979), the `ICC2` row of `psych::ICC()`.
#' @param a,b Matrices (patients x features) of the two readers, same layout.
#' @return Named ICC per column (`NaN` for a feature constant in both).
#' @noRd
icc_agreement <- function(a, b) {
  n <- nrow(a)
  m <- (a + b) / 2
  d <- a - b
  ms_r <- 2 * colSums(sweep(m, 2, colMeans(m))^2) / (n - 1)
  d_bar <- colMeans(d)
  ms_c <- n * d_bar^2 / 2
  ms_e <- colSums(sweep(d, 2, d_bar)^2) / (2 * (n - 1))
  stats::setNames((ms_r - ms_e) / (ms_r + ms_e + 2 * (ms_c - ms_e) / n), colnames(a))
}

#' One-feature Cox models (Efron ties) for every column of z
#'
#' Calls the fitter of `survival::coxph()` directly, one column at a time,
#' skipping the formula machinery; the Wald p is that of `summary.coxph()`.
#' @return Data frame `feature`, `hr`, `p_value`.
#' @noRd
univariate_cox_wald <- function(z, y) {
  ctrl <- survival::coxph.control()
  est <- vapply(seq_len(ncol(z)), function(j) {
    fit <- survival::coxph.fit(z[, j, drop = FALSE], y, strata = NULL, offset = NULL,
                               init = NULL, control = ctrl, weights = NULL, method = "efron",
                               rownames = NULL, resid = FALSE, nocenter = c(-1, 0, 1))
    c(fit$coefficients, sqrt(fit$var[1, 1]))
  }, numeric(2))
  beta <- est[1, ]
  se <- est[2, ]
  data.frame(feature = colnames(z), hr = exp(beta),
             p_value = stats::pchisq((beta / se)^2, 1, lower.tail = FALSE))
}

#' Numeric feature matrix with patient ids as row names, checked
#' @noRd
feature_matrix <- function(tab, id, call_name, arg) {
  if (!is.data.frame(tab)) {
    stop(sprintf("%s(): `%s` must be a data frame", call_name, arg), call. = FALSE)
  }
  if (!id %in% names(tab)) {
    stop(sprintf("%s(): `%s` has no id column `%s`", call_name, arg, id), call. = FALSE)
  }
  ids <- as.character(tab[[id]])
  if (anyNA(ids) || anyDuplicated(ids)) {
    stop(sprintf("%s(): `%s` column `%s` has missing or duplicated ids", call_name, arg, id),
         call. = FALSE)
  }
  cols <- setdiff(names(tab), id)
  if (!length(cols)) stop(sprintf("%s(): `%s` has no feature columns", call_name, arg),
                          call. = FALSE)
  non_num <- cols[!vapply(tab[cols], is.numeric, logical(1))]
  if (length(non_num)) {
    stop(sprintf("%s(): `%s` has non-numeric feature column(s) %s", call_name, arg,
                 paste(utils::head(non_num, 3), collapse = ", ")), call. = FALSE)
  }
  x <- as.matrix(tab[cols])
  bad <- which(!is.finite(x), arr.ind = TRUE)
  if (nrow(bad)) {
    stop(sprintf("%s(): `%s` has missing or infinite values (first: patient %s, feature %s)",
                 call_name, arg, ids[bad[1, 1]], cols[bad[1, 2]]), call. = FALSE)
  }
  rownames(x) <- ids
  x
}

#' Evaluate an expression with a seed, restoring the caller's random state
#' @noRd
with_seed <- function(seed, expr) {
  if (exists(".Random.seed", envir = globalenv())) {
    old <- get(".Random.seed", envir = globalenv())
    on.exit(assign(".Random.seed", old, envir = globalenv()), add = TRUE)
  } else {
    on.exit(rm(".Random.seed", envir = globalenv()), add = TRUE)
  }
  set.seed(seed)
  expr
}

#' repeats x k-fold LASSO Cox, held-out Harrell's C of each model
#'
#' All outer and inner fold ids are drawn first, in one sequence from the
#' seeded stream, so the fits (the expensive part) can run on `cores`
#' processes with results identical to a serial run.
#' @noRd
lasso_repeated_cv <- function(z, y, nfolds, repeats, k, lambda, cores, ...) {
  n <- nrow(z)
  splits <- list()
  for (r in seq_len(repeats)) {
    # folds stratified by event status
    fold <- integer(n)
    for (s in 0:1) {
      idx <- which(y[, 2] == s)
      fold[idx] <- sample(rep_len(seq_len(k), length(idx)))
    }
    for (f in seq_len(k)) {
      tr <- fold != f
      splits[[length(splits) + 1L]] <- list(r = r, f = f, train = tr,
                                            inner = sample(rep_len(seq_len(nfolds), sum(tr))))
    }
  }
  fit_split <- function(sp) {
    tr <- sp$train
    cvfit <- glmnet::cv.glmnet(z[tr, , drop = FALSE], y[tr], family = "cox", foldid = sp$inner,
                               ...)
    b <- as.matrix(stats::coef(cvfit, s = lambda))[, 1]
    lp <- drop(z[!tr, , drop = FALSE] %*% b)
    c_idx <- if (any(b != 0)) {
      survival::concordance(y[!tr] ~ lp, reverse = TRUE)$concordance
    } else {
      0.5
    }
    list(row = data.frame(`repeat` = sp$r, fold = sp$f, n_features = sum(b != 0),
                          c_index = c_idx, check.names = FALSE),
         coef = b)
  }
  res <- if (cores > 1L) {
    parallel::mclapply(splits, fit_split, mc.cores = cores, mc.preschedule = TRUE)
  } else {
    lapply(splits, fit_split)
  }
  failed <- Filter(function(x) inherits(x, "try-error"), res)
  if (length(failed)) {
    stop("radiomic_signature(): a LASSO fit failed: ",
         conditionMessage(attr(failed[[1]], "condition")), call. = FALSE)
  }
  list(table = do.call(rbind, lapply(res, `[[`, "row")), coefs = lapply(res, `[[`, "coef"))
}

#' Score patients with a locked radiomic signature
#'
#' Applies the training scaling and LASSO coefficients to new patients:
#' \eqn{\sum_j \beta_j (x_j - \bar x_j) / s_j}. Nothing is re-estimated.
#'
#' @param object A `radiomic_signature`.
#' @param newdata Feature table with the signature's `id` column and at least
#'   the signature's features.
#' @param ... Unused.
#' @return Numeric vector of signature values named by patient id.
#' @export
predict.radiomic_signature <- function(object, newdata, ...) {
  f <- names(object$coefficients)
  if (!is.data.frame(newdata)) {
    stop("predict.radiomic_signature(): `newdata` must be a data frame", call. = FALSE)
  }
  miss <- setdiff(f, names(newdata))
  if (length(miss)) {
    stop(sprintf("predict.radiomic_signature(): `newdata` lacks feature column(s) %s",
                 paste(miss, collapse = ", ")), call. = FALSE)
  }
  x <- feature_matrix(newdata[intersect(c(object$id, f), names(newdata))], object$id,
                      "predict.radiomic_signature", "newdata")
  z <- sweep(sweep(x[, f, drop = FALSE], 2, object$center, "-"), 2, object$scale, "/")
  stats::setNames(drop(z %*% object$coefficients), rownames(x))
}

#' @export
print.radiomic_signature <- function(x, ...) {
  cat(sprintf("Radiomic signature for endpoint '%s'\n", x$endpoint))
  st <- x$stages
  cat(sprintf("  %-28s %d\n", c("input features", "after ICC filter", "after z-scoring",
                                "after univariate Cox filter", "after correlation filter",
                                "in the LASSO model"),
              c(length(st$input), length(st$icc), length(st$scaled), length(st$univariate),
                length(st$correlation), length(st$lasso))), sep = "")
  cat(sprintf("  repeated CV: %d models, mean held-out C = %.3f, chosen model C = %.3f\n",
              nrow(x$cv), x$mean_cv_c_index, x$cv$c_index[x$cv$chosen]))
  print(data.frame(coefficient = x$coefficients, center = x$center, scale = x$scale), digits = 4)
  invisible(x)
}
