# Paired comparison of two time-dependent AUCs on the same subjects, from the
# influence functions of the two estimators, with simultaneous p-values over
# the evaluation times.

#' Compare two time-dependent AUCs on the same subjects
#'
#' Tests, at each time, whether two risk scores measured on the same subjects
#' have the same cumulative/dynamic AUC ([td_auc()]), using the i.i.d.
#' representations of the two estimators, and gives p-values adjusted for
#' testing at several times. Reproduces `timeROC::compare(r1, r2)` (unadjusted)
#' and `timeROC::compare(r1, r2, adjusted = TRUE)` for two `timeROC(...,
#' weighting = "marginal", iid = TRUE)` fits.
#'
#' @section Tests:
#' With \eqn{\hat\psi^{(1)}_k(t)}, \eqn{\hat\psi^{(2)}_k(t)} the influence
#' functions of the two AUC estimators at time \eqn{t} (see [td_auc()]), the
#' difference \eqn{\hat\Delta(t) = \widehat{AUC}_1(t) - \widehat{AUC}_2(t)} has
#' standard error \eqn{\mathrm{sd}_k(\hat\psi^{(1)}_k(t) - \hat\psi^{(2)}_k(t))/\sqrt n},
#' and `p_value` is the two-sided normal p-value of
#' \eqn{z(t) = \hat\Delta(t)/\widehat{se}}, unadjusted.
#'
#' `p_adjusted` controls the family-wise error over the times: with
#' \eqn{R} the correlation matrix of \eqn{(\hat\Delta(t_1), \dots, \hat\Delta(t_K))}
#' (estimated from the same influence functions, returned as `cor`),
#' \deqn{p^{adj}(t_l) = 1 - P\left(\max_m |Z_m| \le |z(t_l)|\right),
#'   \quad Z \sim N_K(0, R).}
#' The multivariate normal probability is computed with
#' `mvtnorm::pmvnorm()` using the deterministic Miwa algorithm (up to 20
#' times), so the result does not depend on the random seed; timeROC uses the
#' randomised Genz-Bretz algorithm (`abseps = 1e-6`), so the two agree to about
#' \eqn{10^{-5}}. With more than 20 times, or a singular \eqn{R}, Genz-Bretz is
#' used with `abseps = 1e-7` (randomised: set a seed to reproduce it). With a
#' single time, `p_adjusted` equals `p_value` (timeROC refuses to adjust
#' then, because it prepends an NA AUC at \eqn{t = 0}). Times where either AUC
#' is `NA` get `NA` p-values and are left out of the adjustment, with a
#' warning.
#'
#' @inheritParams td_auc
#' @param score1,score2 Numeric risk scores (higher = higher risk) on the same
#'   subjects; `diff` is the AUC of `score1` minus that of `score2`.
#' @return An object of class `compare_td_auc`: a list with `table` (see
#'   [as.data.frame.compare_td_auc()]), `cor` (correlation matrix of the AUC
#'   differences across times), `n`, `n_events`, `n_dropped`, `reason`.
#' @references
#' Blanche P, Dartigues J-F, Jacqmin-Gadda H (2013). Estimating and comparing
#' time-dependent areas under receiver operating characteristic curves for
#' censored event times with competing risks. *Statistics in Medicine*
#' 32(30):5381-5397.
#' @seealso [td_auc()]
#' @examples
#' d <- survival::lung
#' d <- d[complete.cases(d[, c("ph.ecog", "ph.karno")]), ]
#' cmp <- compare_td_auc(d$ph.ecog, -d$ph.karno, d$time, d$status == 2,
#'                       times = c(180, 365))
#' cmp
#' @export
compare_td_auc <- function(score1, score2, time, event, times, na_action = c("omit", "fail")) {
  na_action <- match.arg(na_action)
  x <- check_surv_input(time, event, score1 = score1, score2 = score2, na_action = na_action,
                        call_name = "compare_td_auc")
  check_score_varies(x$score1, "score1", "compare_td_auc")
  check_score_varies(x$score2, "score2", "compare_td_auc")
  times <- check_roc_times(times, x$time, "compare_td_auc")
  prep <- tdroc_censoring(x$time, x$event)
  res <- tdroc_estimate(prep, times, list(x$score1[prep$ord], x$score2[prep$ord]))
  f1 <- res$markers[[1]]
  f2 <- res$markers[[2]]
  n <- prep$n
  reason <- res$reason
  d_iid <- f1$iid - f2$iid
  se <- apply(d_iid, 2, stats::sd) / sqrt(n)
  diff <- f1$auc - f2$auc
  flat <- !is.na(se) & se <= 0
  reason[flat] <- paste("the two AUC estimators have identical influence functions",
                        "(zero variance of the difference)")
  se[flat] <- NA_real_
  z <- diff / se
  p_value <- 2 * stats::pnorm(abs(z), lower.tail = FALSE)
  ok <- !is.na(z)
  cor_diff <- matrix(NA_real_, length(times), length(times))
  if (any(ok)) cor_diff[ok, ok] <- stats::cor(d_iid[, ok, drop = FALSE])
  p_adjusted <- rep(NA_real_, length(times))
  p_adjusted[ok] <- max_abs_z_p(z[ok], cor_diff[ok, ok, drop = FALSE])
  warn_roc_reasons(reason, times, "compare_td_auc")
  table <- data.frame(time = times, auc1 = f1$auc, auc2 = f2$auc, diff = diff, se = se, z = z,
                      p_value = p_value, p_adjusted = p_adjusted)
  dimnames(cor_diff) <- list(format(times), format(times))
  structure(list(table = table, cor = cor_diff, n = n, n_events = sum(x$event),
                 n_dropped = x$n_dropped, reason = reason),
            class = "compare_td_auc")
}

#' Tidy table of a comparison of two time-dependent AUCs
#'
#' @param x A `compare_td_auc` object.
#' @param row.names,optional Ignored (for the generic).
#' @param ... Ignored.
#' @return A data frame with one row per time: `time`, `auc1`, `auc2`,
#'   `diff` (`auc1 - auc2`), `se` (of `diff`), `z`, `p_value` (two-sided,
#'   unadjusted) and `p_adjusted` (simultaneous over the times). Attribute
#'   `reason` gives, per time, why the test is `NA` (otherwise `NA`).
#' @export
as.data.frame.compare_td_auc <- function(x, row.names = NULL, optional = FALSE, ...) roc_table(x)

#' @export
print.compare_td_auc <- function(x, digits = 4, ...) {
  print_roc_table(x, "Comparison of two time-dependent AUCs (paired, marginal Kaplan-Meier IPCW)",
                  rounded = c("auc1", "auc2", "diff", "se", "z"), digits = digits,
                  pvals = c("p_value", "p_adjusted"),
                  footer = "p_adjusted: simultaneous over the times (max |z|)")
}

# Simultaneous two-sided p-values: 1 - P(max |Z| <= |z_l|), Z ~ N(0, corr).
max_abs_z_p <- function(z, corr) {
  k <- length(z)
  if (k == 1L) return(2 * stats::pnorm(abs(z), lower.tail = FALSE))
  prob_inside <- function(a, algorithm) {
    mvtnorm::pmvnorm(lower = rep(-a, k), upper = rep(a, k), corr = corr, algorithm = algorithm)
  }
  genz <- mvtnorm::GenzBretz(maxpts = 1e6, abseps = 1e-7, releps = 0)
  vapply(abs(z), function(a) {
    inside <- if (k <= 20L) {
      tryCatch(prob_inside(a, mvtnorm::Miwa(steps = 4096)), error = function(e) prob_inside(a, genz))
    } else {
      prob_inside(a, genz)
    }
    1 - as.numeric(inside)
  }, numeric(1))
}
