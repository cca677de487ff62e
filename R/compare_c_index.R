# Comparison of two correlated C-indices measured on the same patients:
# Kang et al. (2015) U-statistic variance (compareC) or the survcomp t-test.

#' Compare the C-indices of two risk scores on the same patients
#'
#' Both scores are risk scores (higher = higher risk); `diff` is `c1 - c2`.
#'
#' @section Method kang (as compareC::compareC, Kang et al. 2015):
#' Writes the C-index as a ratio of two U-statistics over ordered pairs,
#' \eqn{\hat\tau_{XX} = \sum_{i \ne j} a_{ij}^2 / (n(n-1))} and
#' \eqn{\hat\tau_{XY} = \sum_{i \ne j} a_{ij} b_{ij} / (n(n-1))}, where
#' \eqn{a_{ij} \in \{-1, 0, 1\}} is the observable sign of \eqn{T_i - T_j}
#' (zero when the pair is not comparable; a censored time tied with an event
#' time counts as longer) and \eqn{b_{ij} = \textrm{sign}(s_j - s_i)} for the
#' risk score \eqn{s} (compareC expects higher = longer survival, so the score
#' is negated). Then \eqn{\hat C = (1 + \hat\tau_{XY}/\hat\tau_{XX})/2}, which
#' equals the `"harrell"` [c_index()] on data without near-tied times (times are
#' compared as given, not merged). Each variance or covariance of two such
#' U-statistics with kernels \eqn{k, l} is
#' \deqn{\frac{4\sum_i k_{i\cdot} l_{i\cdot} - 2\sum_{i \ne j} k_{ij} l_{ij} -
#'   2(2n-3)\,k_{\cdot\cdot} l_{\cdot\cdot} / (n(n-1))}{n(n-1)(n-2)(n-3)},}
#' with row sums \eqn{k_{i\cdot}} and totals \eqn{k_{\cdot\cdot}}; the variances of
#' \eqn{\hat C_1, \hat C_2} and their covariance follow by the delta method, and
#' \eqn{z = (\hat C_1 - \hat C_2)/\sqrt{\mathrm{var}_1 + \mathrm{var}_2 - 2\,\mathrm{cov}}}
#' with a two-sided normal p-value. Row sums come from per-subject concordance
#' counts (Fenwick trees, O(n log n)); the pair term
#' \eqn{\sum a_{ij}^2 b_{ij} c_{ij}} of the covariance is a three-dimensional
#' dominance count done by divide and conquer (O(n log^2 n) time, O(n) memory).
#'
#' @section Method log_t (as survcomp 1.1.6 cindex.comp, Haibe-Kains et al. 2008):
#' Both C-indices are computed with `c_index(convention = "survcomp")` (score
#' ties dropped, Noether standard errors \eqn{s_1, s_2}) and combined with the
#' Pearson correlation \eqn{r} of the two scores:
#' \deqn{t = \frac{\hat C_1 - \hat C_2}{\sqrt{s_1^2 + s_2^2 - 2 r s_1 s_2}}}
#' on \eqn{n - 1} degrees of freedom. `p_value` is the one-sided
#' \eqn{P(T_{n-1} > t)} that survcomp reports (1 when \eqn{|r| = 1}, as there);
#' `p_value_two_sided` is \eqn{2 P(T_{n-1} > |t|)}. survcomp 1.1.6, whose
#' values are reproduced here, forms \eqn{t} on the C-indices themselves, not
#' on their logarithms as later survcomp releases do; `z` holds \eqn{t}, and
#' `var_c1`, `var_c2`, `cov` hold \eqn{s_1^2, s_2^2, r s_1 s_2}.
#'
#' @inheritParams c_index
#' @param score1,score2 Numeric risk scores of the same patients.
#' @param method `"kang"` or `"log_t"`, see the sections below.
#' @return An object of class `compare_c_index`: a list with `c1`, `c2`, `diff`,
#'   `se`, `z`, `p_value`, `p_value_two_sided`, `var_c1`, `var_c2`, `cov`, `df`
#'   (`Inf` for the normal test), `r` (Pearson correlation of the scores; `NA`
#'   for `"kang"`), `n`, `events`, `method`, `n_dropped`. `as.data.frame()` gives
#'   them as one row. When the two scores order all comparable pairs the same
#'   way (`"kang"` variance of the difference 0), `z` and the p-values are `NA`
#'   with a warning.
#' @references
#' Kang L, Chen W, Petrick NA, Gallas BD (2015). Comparing two correlated C
#' indices with right-censored survival outcome: a one-shot nonparametric
#' approach. Statistics in Medicine 34:685-703.
#'
#' Haibe-Kains B, Desmedt C, Sotiriou C, Bontempi G (2008). A comparative study
#' of survival models for breast cancer prognostication based on microarray
#' data: does a single gene beat them all? Bioinformatics 24:2200-2208.
#' @seealso [c_index()]
#' @examples
#' d <- survival::lung
#' d <- d[complete.cases(d[, c("ph.ecog", "ph.karno")]), ]
#' compare_c_index(d$ph.ecog, -d$ph.karno, d$time, d$status == 2)
#' as.data.frame(compare_c_index(d$ph.ecog, -d$ph.karno, d$time, d$status == 2, method = "log_t"))
#' @export
compare_c_index <- function(score1, score2, time, event, method = c("kang", "log_t"),
                            na_action = c("omit", "fail")) {
  method <- match.arg(method)
  na_action <- match.arg(na_action)
  chk <- check_surv_input(time, event, score1 = score1, score2 = score2, na_action = na_action,
                          min_events = 2L, call_name = "compare_c_index")
  check_score_varies(chk$score1, "score1", "compare_c_index")
  check_score_varies(chk$score2, "score2", "compare_c_index")
  fit <- if (method == "kang") {
    kang_fit(chk$score1, chk$score2, chk$time, chk$event)
  } else {
    log_t_fit(chk$score1, chk$score2, chk$time, chk$event)
  }
  fit$n_dropped <- chk$n_dropped
  fit
}

#' Kang et al. comparison on checked input
#'
#' @param score1,score2,time,event Clean inputs.
#' @param engine Pair-counting engine, see [concordance_counts()].
#' @return A `compare_c_index` object without `n_dropped`.
#' @keywords internal
#' @noRd
kang_fit <- function(score1, score2, time, event, engine = "fast") {
  n <- length(time)
  if (n < 4L) stop("compare_c_index(): method \"kang\" needs at least 4 complete rows", call. = FALSE)
  k1 <- concordance_counts(time, event, score1, censored_tie_later = TRUE, engine = engine)
  k2 <- concordance_counts(time, event, score2, censored_tie_later = TRUE, engine = engine)
  # Row sums of the kernels: u (comparable), v and w (concordant minus discordant).
  u <- k1$concordant + k1$discordant + k1$tied
  v <- k1$concordant - k1$discordant
  w <- k2$concordant - k2$discordant
  if (sum(u) == 0) stop("compare_c_index(): no comparable pairs", call. = FALSE)
  nn <- as.numeric(n)
  n1 <- nn * (nn - 1)
  u_stat_cov <- function(a, b, pair_term) {
    (4 * sum(a * b) - 2 * pair_term - 2 * (2 * nn - 3) * sum(a) * sum(b) / n1) /
      (n1 * (nn - 2) * (nn - 3))
  }
  t11 <- sum(u) / n1
  t12 <- sum(v) / n1
  t13 <- sum(w) / n1
  var11 <- u_stat_cov(u, u, sum(u))
  var12 <- u_stat_cov(v, v, sum(k1$concordant + k1$discordant))
  var13 <- u_stat_cov(w, w, sum(k2$concordant + k2$discordant))
  cov11_12 <- u_stat_cov(u, v, sum(v))
  cov11_13 <- u_stat_cov(u, w, sum(w))
  cov12_13 <- u_stat_cov(v, w, 2 * concordance_cross(time, event, score1, score2, engine = engine))
  # Delta method for C = (1 + t1k / t11) / 2.
  g2 <- c(1 / t11, -t12 / t11^2) / 2
  g3 <- c(1 / t11, -t13 / t11^2) / 2
  var_c1 <- sum(g2 * (matrix(c(var12, cov11_12, cov11_12, var11), 2) %*% g2))
  var_c2 <- sum(g3 * (matrix(c(var13, cov11_13, cov11_13, var11), 2) %*% g3))
  cov_c <- sum(g2 * (matrix(c(cov12_13, cov11_13, cov11_12, var11), 2) %*% g3))
  c1 <- (1 + t12 / t11) / 2
  c2 <- (1 + t13 / t11) / 2
  new_compare_c_index(c1, c2, var_c1, var_c2, cov_c, df = Inf, r = NA_real_, n = n,
                      events = sum(event), method = "kang")
}

#' survcomp cindex.comp on checked input
#'
#' @inheritParams kang_fit
#' @return A `compare_c_index` object without `n_dropped`.
#' @keywords internal
#' @noRd
log_t_fit <- function(score1, score2, time, event, engine = "fast") {
  f1 <- c_index_fit(score1, time, event, "survcomp", engine = engine)
  f2 <- c_index_fit(score2, time, event, "survcomp", engine = engine)
  r <- stats::cor(score1, score2)
  new_compare_c_index(f1$estimate, f2$estimate, f1$se^2, f2$se^2, r * f1$se * f2$se,
                      df = length(time) - 1, r = r, n = length(time), events = sum(event),
                      method = "log_t")
}

# Assemble the comparison from the two estimates and their (co)variances.
new_compare_c_index <- function(c1, c2, var_c1, var_c2, cov, df, r, n, events, method) {
  diff <- c1 - c2
  vardiff <- var_c1 + var_c2 - 2 * cov
  se <- sqrt(max(vardiff, 0))
  z <- diff / se
  if (method == "log_t" && abs(r) >= 1) {
    p_value <- 1
    p_two <- if (is.finite(z)) 2 * stats::pt(-abs(z), df) else NA_real_
  } else if (!is.finite(z) || vardiff <= 1e-14 * (var_c1 + var_c2)) {
    warning("compare_c_index(): the variance of the difference is 0 (the scores order the ",
            "comparable pairs identically); z and p-values set to NA", call. = FALSE)
    z <- p_value <- p_two <- NA_real_
  } else if (method == "kang") {
    p_value <- p_two <- 2 * stats::pnorm(-abs(z))
  } else {
    p_value <- stats::pt(z, df, lower.tail = FALSE)
    p_two <- 2 * stats::pt(-abs(z), df)
  }
  structure(list(c1 = c1, c2 = c2, diff = diff, se = se, z = z, p_value = p_value,
                 p_value_two_sided = p_two, var_c1 = var_c1, var_c2 = var_c2, cov = cov, df = df,
                 r = r, n = n, events = events, method = method),
            class = "compare_c_index")
}

#' @rdname compare_c_index
#' @param x A `compare_c_index` object.
#' @param row.names,optional Ignored (for the generic).
#' @param ... Ignored.
#' @export
as.data.frame.compare_c_index <- function(x, row.names = NULL, optional = FALSE, ...) {
  data.frame(x[c("c1", "c2", "diff", "se", "z", "p_value", "p_value_two_sided", "var_c1", "var_c2",
                 "cov", "df", "r", "n", "events", "method")], stringsAsFactors = FALSE)
}

#' @rdname compare_c_index
#' @param digits Significant digits for printing.
#' @export
print.compare_c_index <- function(x, digits = 4, ...) {
  if (x$method == "kang") {
    cat("Comparison of two C-indices (Kang et al. 2015 U-statistic variance, as compareC)\n")
  } else {
    cat("Comparison of two C-indices (survcomp cindex.comp: Noether SEs, t-test on n - 1 df)\n")
  }
  cat(sprintf("  n = %d, events = %d\n", x$n, x$events))
  cat(sprintf("  C1 = %s, C2 = %s, C1 - C2 = %s (se %s)\n", format(x$c1, digits = digits),
              format(x$c2, digits = digits), format(x$diff, digits = digits),
              format(x$se, digits = digits)))
  if (x$method == "kang") {
    cat(sprintf("  z = %s, two-sided p = %s\n", format(x$z, digits = digits),
                format.pval(x$p_value, digits = 3)))
  } else {
    cat(sprintf("  t = %s on %d df (r = %s), one-sided p = %s, two-sided p = %s\n",
                format(x$z, digits = digits), as.integer(x$df), format(x$r, digits = digits),
                format.pval(x$p_value, digits = 3), format.pval(x$p_value_two_sided, digits = 3)))
  }
  invisible(x)
}
