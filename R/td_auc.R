# Time-dependent ROC AUC (cumulative cases / dynamic controls) with inverse
# probability of censoring weights from the marginal Kaplan-Meier estimator of
# the censoring distribution, and its influence-function standard error.

#' Time-dependent ROC AUC with censoring weights
#'
#' Cumulative/dynamic area under the time-dependent ROC curve of a risk score,
#' with inverse-probability-of-censoring weights (IPCW) from the marginal
#' Kaplan-Meier estimator of the censoring distribution, and a standard error
#' from its i.i.d. (influence function) representation. The estimates
#' reproduce those of `timeROC::timeROC(T, delta, marker, cause = 1,
#' weighting = "marginal", times, iid = TRUE)`, computed in
#' \eqn{O(n \log n)} time and \eqn{O(n)} memory.
#'
#' @section Estimator:
#' At time \eqn{t}, cases are subjects with an event before \eqn{t}
#' (\eqn{T_i < t}, \eqn{\delta_i = 1}) and controls are subjects still under
#' observation after \eqn{t} (\eqn{T_j > t}). With \eqn{\hat G} the
#' Kaplan-Meier estimator of the censoring survival function (at a time where
#' events and censorings tie, the events leave the risk set first),
#' \deqn{\widehat{AUC}^{C/D}(t) = \frac{\sum_i \sum_j 1\{T_i < t, \delta_i = 1\}
#'   1\{T_j > t\} \, \omega_i \omega_j \, [1\{M_i > M_j\} + \tfrac12 1\{M_i = M_j\}]}
#'   {\sum_i 1\{T_i < t, \delta_i = 1\} \omega_i \; \sum_j 1\{T_j > t\} \omega_j},
#'   \qquad \omega_i = \frac{1}{n \hat G(T_i-)},\; \omega_j = \frac{1}{n \hat G(t)},}
#' where \eqn{M} is the score (higher = higher risk). Pairs tied in score count
#' one half (trapezoidal ROC area). A subject with an event exactly at \eqn{t}
#' is neither a case nor a control; it is counted in `censored`, as in timeROC.
#' `surv_prob` is \eqn{\hat S(t) = \#\{T_j > t\} / (n \hat G(t))}, the
#' Kaplan-Meier estimate of event-free survival at \eqn{t}.
#'
#' The standard error is \eqn{\mathrm{sd}(\hat\psi_1, \dots, \hat\psi_n)/\sqrt n}
#' with \eqn{\hat\psi_k} the estimated influence function of the estimator
#' (Blanche et al. 2013): the terms from cases, controls, and the martingale
#' representation of the censoring Kaplan-Meier estimator. Ties in time are
#' handled as timeROC does: subjects are ordered by time (ties kept in input
#' order) and the censoring compensator of that representation is accumulated
#' along this order. Consequently, when times tie, the standard error (not the
#' AUC) depends slightly on the order of the tied rows in the input, exactly
#' as timeROC's does (relative changes below \eqn{10^{-4}} on the reference
#' datasets). All sums are cumulative sums over the time order and
#' interval searches over the sorted scores, so the whole computation is
#' \eqn{O(n \log n)}. The confidence interval is
#' \eqn{\widehat{AUC} \pm z_{0.975}\, \widehat{se}} (not truncated to \[0, 1\]).
#'
#' Unlike timeROC, a single requested time is returned alone (timeROC prepends
#' \eqn{t = 0}), and rows come in increasing time.
#'
#' @param score Numeric risk score (higher = higher risk), one per subject.
#' @param time Follow-up times (positive, finite), in the data's own unit.
#' @param event Event indicator: 1/`TRUE` = event, 0/`FALSE` = censored.
#' @param times Evaluation times: positive, distinct, not after the last
#'   observed time. Returned in increasing order.
#' @param na_action `"omit"` drops subjects with a missing value in `score`,
#'   `time` or `event` (with a message giving the count); `"fail"` stops.
#' @return An object of class `td_auc`: a list with `table` (see
#'   [as.data.frame.td_auc()]), `n`, `n_events`, `n_dropped` and `reason`
#'   (per time, why the AUC is `NA`, otherwise `NA`). At a time with no case
#'   (no event before it) or no control (nobody observed beyond it) the AUC
#'   and its standard error are `NA` and a warning gives the reason.
#' @references
#' Blanche P, Dartigues J-F, Jacqmin-Gadda H (2013). Estimating and comparing
#' time-dependent areas under receiver operating characteristic curves for
#' censored event times with competing risks. *Statistics in Medicine*
#' 32(30):5381-5397.
#'
#' Uno H, Cai T, Tian L, Wei LJ (2007). Evaluating prediction rules for
#' t-year survivors with censored regression models. *Journal of the American
#' Statistical Association* 102(478):527-537.
#' @seealso [compare_td_auc()] to compare two scores on the same subjects.
#' @examples
#' d <- survival::lung
#' d <- d[!is.na(d$ph.ecog), ]
#' fit <- td_auc(d$ph.ecog, d$time, d$status == 2, times = c(180, 365))
#' fit
#' as.data.frame(fit)
#' @export
td_auc <- function(score, time, event, times, na_action = c("omit", "fail")) {
  na_action <- match.arg(na_action)
  x <- check_surv_input(time, event, score = score, na_action = na_action, call_name = "td_auc")
  check_score_varies(x$score, "score", "td_auc")
  times <- check_roc_times(times, x$time, "td_auc")
  prep <- tdroc_censoring(x$time, x$event)
  res <- tdroc_estimate(prep, times, list(x$score[prep$ord]))
  fit <- res$markers[[1]]
  z <- stats::qnorm(0.975)
  table <- data.frame(time = times, auc = fit$auc, se = fit$se,
                      lower = fit$auc - z * fit$se, upper = fit$auc + z * fit$se,
                      cases = res$cases, survivors = res$survivors,
                      censored = prep$n - res$cases - res$survivors,
                      surv_prob = res$surv_prob)
  warn_roc_reasons(res$reason, times, "td_auc")
  structure(list(table = table, n = prep$n, n_events = sum(x$event), n_dropped = x$n_dropped,
                 reason = res$reason),
            class = "td_auc")
}

#' Tidy table of a time-dependent AUC
#'
#' @param x A `td_auc` object.
#' @param row.names,optional Ignored (for the generic).
#' @param ... Ignored.
#' @return A data frame with one row per time: `time`, `auc`, `se`, `lower`,
#'   `upper` (95% Wald limits, unrounded), `cases` (events before `time`),
#'   `survivors` (observed beyond `time`: the controls), `censored` (all
#'   others: censored before `time`, or event at `time`) and `surv_prob`
#'   (Kaplan-Meier event-free survival at `time`). Attribute `reason` gives,
#'   per time, why the AUC is `NA` (otherwise `NA`).
#' @export
as.data.frame.td_auc <- function(x, row.names = NULL, optional = FALSE, ...) roc_table(x)

#' @export
print.td_auc <- function(x, digits = 4, ...) {
  print_roc_table(x, "Time-dependent AUC (cumulative/dynamic, marginal Kaplan-Meier IPCW)",
                  rounded = c("auc", "se", "lower", "upper", "surv_prob"), digits = digits)
}

# ---- internal helpers shared with compare_td_auc() ----------------------

# The table of a td_auc / compare_td_auc object with the per-time reasons attached.
roc_table <- function(x) {
  out <- x$table
  attr(out, "reason") <- x$reason
  out
}

# Print method body of td_auc / compare_td_auc: title, sample line, the table
# with `rounded` columns rounded and `pvals` columns formatted, a footer and
# the reasons for NA rows.
print_roc_table <- function(x, title, rounded, digits, pvals = character(0), footer = NULL) {
  cat(title, "\n", sep = "")
  cat(sprintf("n = %d, events = %d%s\n\n", x$n, x$n_events,
              if (x$n_dropped > 0) sprintf(" (%d dropped for missing values)", x$n_dropped) else ""))
  tab <- x$table
  tab[rounded] <- lapply(tab[rounded], round, digits = digits)
  tab[pvals] <- lapply(tab[pvals], format.pval, digits = digits)
  print(tab, row.names = FALSE)
  if (!is.null(footer)) cat(footer, "\n", sep = "")
  print_roc_reasons(x$reason, x$table$time)
  invisible(x)
}

# Validates evaluation times against the observed follow-up; returns them sorted.
check_roc_times <- function(times, time, call_name) {
  stop_times <- function(msg) stop(sprintf("%s(): `times` %s", call_name, msg), call. = FALSE)
  if (missing(times) || length(times) == 0L) stop_times("is missing or empty")
  if (!is.numeric(times)) stop_times(sprintf("must be numeric, not %s", class(times)[1]))
  if (anyNA(times) || any(!is.finite(times))) stop_times("must be finite, without NA")
  if (any(times <= 0)) {
    stop_times(sprintf("must be positive (got %s)", paste(format(times[times <= 0]), collapse = ", ")))
  }
  if (anyDuplicated(times)) stop_times("must be distinct")
  last <- max(time)
  if (any(times > last)) {
    stop_times(sprintf("%s beyond the last observed time (%s): outside follow-up",
                       paste(format(times[times > last]), collapse = ", "), format(last)))
  }
  sort(as.numeric(times))
}

# Censoring Kaplan-Meier pieces on the time-ordered sample (ties in time kept
# in input order). Events leave the risk set before censorings at a tied time.
tdroc_censoring <- function(time, event) {
  ord <- order(time)
  ts <- time[ord]
  ds <- event[ord]
  n <- length(ts)
  cens <- 1 - ds
  first <- c(TRUE, ts[-1L] != ts[-n])
  grp <- cumsum(first)
  ut <- ts[first]
  ng <- length(ut)
  n_cens <- tabulate(grp[cens == 1], ng)
  n_ev <- tabulate(grp[ds == 1], ng)
  at_risk <- n - c(0L, cumsum(tabulate(grp, ng)))[seq_len(ng)]
  factor <- ifelse(n_cens > 0, 1 - n_cens / (at_risk - n_ev), 1)
  g_after <- cumprod(factor)
  g_before <- c(1, g_after[-ng])
  first_row <- which(first)[grp]
  list(ord = ord, time = ts, event = ds, cens = cens, n = n, unique_time = ut,
       g_after = g_after, g_minus = g_before[grp],
       # censoring martingale terms (row-ordered compensator, see Details)
       cens_jump = cens / (n - first_row + 1),
       first_row = first_row,
       cum_haz2 = cumsum(cens / (n - seq_len(n) + 1)^2))
}

# AUC, standard error and influence function (length n, time order) for each
# marker (already in time order) at each time.
tdroc_estimate <- function(prep, times, markers) {
  n <- prep$n
  k <- length(times)
  ts <- prep$time
  empty <- list(auc = rep(NA_real_, k), se = rep(NA_real_, k), iid = matrix(NA_real_, n, k))
  out_m <- rep(list(empty), length(markers))
  cases <- survivors <- integer(k)
  surv_prob <- numeric(k)
  reason <- rep(NA_character_, k)
  for (l in seq_len(k)) {
    t <- times[l]
    idx <- findInterval(t, prep$unique_time)
    g_t <- if (idx == 0L) 1 else prep$g_after[idx]
    case <- which(ts < t & prep$event == 1)
    n_le <- findInterval(t, ts)
    ctrl <- if (n_le < n) seq.int(n_le + 1L, n) else integer(0)
    cases[l] <- length(case)
    survivors[l] <- length(ctrl)
    surv_prob[l] <- length(ctrl) / (n * g_t)
    if (length(case) == 0L) {
      reason[l] <- "no cases: no event before this time"
      next
    }
    if (length(ctrl) == 0L) {
      reason[l] <- "no controls: nobody observed beyond this time"
      next
    }
    w <- 1 / (n * prep$g_minus[case])
    w_ctrl <- 1 / (n * g_t)
    for (m in seq_along(markers)) {
      fit <- tdroc_one(prep, markers[[m]], case, ctrl, w, w_ctrl)
      out_m[[m]]$auc[l] <- fit$auc
      out_m[[m]]$se[l] <- stats::sd(fit$iid) / sqrt(n)
      out_m[[m]]$iid[, l] <- fit$iid
    }
  }
  list(markers = out_m, cases = cases, survivors = survivors, surv_prob = surv_prob,
       reason = reason)
}

# One marker at one time. `case`, `ctrl`: row indices (time order); `w`: case
# weights 1/(n G(T_i-)); `w_ctrl`: control weight 1/(n G(t)).
tdroc_one <- function(prep, marker, case, ctrl, w, w_ctrl) {
  n <- prep$n
  m_case <- marker[case]
  m_ctrl <- marker[ctrl]
  # each case against the controls: controls below + half the tied ones
  ctrl_sorted <- sort(m_ctrl, method = "radix")
  below <- findInterval(m_case, ctrl_sorted, left.open = TRUE)
  below_eq <- findInterval(m_case, ctrl_sorted)
  r_case <- (below + below_eq) / 2
  # each control against the cases: weight of cases above + half the tied ones
  oc <- order(m_case, method = "radix")
  case_sorted <- m_case[oc]
  cw <- c(0, cumsum(w[oc]))
  f_t <- sum(w)
  q_ctrl <- f_t - (cw[findInterval(m_ctrl, case_sorted) + 1L] +
                     cw[findInterval(m_ctrl, case_sorted, left.open = TRUE) + 1L]) / 2
  s_t <- length(ctrl) * w_ctrl
  h <- w_ctrl * sum(w * r_case)
  fs <- f_t * s_t
  # influence function: case term, control term, censoring-martingale term
  col_sum <- numeric(n)
  col_sum[case] <- n^2 * w_ctrl * w * r_case
  row_sum <- numeric(n)
  row_sum[ctrl] <- n^2 * w_ctrl * q_ctrl
  dit <- numeric(n)
  dit[case] <- n * w
  above_t <- numeric(n)
  above_t[ctrl] <- n / length(ctrl)
  term_case <- (col_sum - n * h * (above_t + (dit - f_t) / f_t)) / fs
  term_ctrl <- (row_sum - n * h) / fs
  a <- col_sum / n - (h / f_t) * dit
  suffix_a <- rev(cumsum(rev(a)))
  tail_a <- suffix_a - a
  term_cens <- n * (prep$cens_jump * suffix_a[prep$first_row] -
                      cumsum(a * prep$cum_haz2) - prep$cum_haz2 * tail_a) / fs
  list(auc = h / fs, iid = (term_case + term_ctrl + term_cens) / n)
}

# One warning listing the times with an NA AUC and why.
warn_roc_reasons <- function(reason, times, call_name) {
  bad <- !is.na(reason)
  if (any(bad)) {
    warning(sprintf("%s(): AUC is NA at %s", call_name,
                    paste(sprintf("time %s (%s)", format(times[bad]), reason[bad]), collapse = "; ")),
            call. = FALSE)
  }
}

print_roc_reasons <- function(reason, times) {
  bad <- !is.na(reason)
  if (any(bad)) cat(sprintf("NA at time %s: %s\n", format(times[bad]), reason[bad]), sep = "")
}

# ---- O(n^2) reference implementation -----------------------------------

# Quadratic-memory version of the same estimator, written from the n x n
# formulation (pairwise case/control kernel and the matrix of censoring
# martingale integrals). Internal: an independent check for tdroc_estimate()
# on small samples and the baseline of the scaling benchmark.
td_auc_quadratic <- function(score, time, event, times) {
  ord <- order(time)
  ts <- time[ord]
  ds <- event[ord]
  mk <- score[ord]
  n <- length(ts)
  cens <- 1 - ds
  # censoring Kaplan-Meier by direct counting at each censoring time
  cs <- unique(ts[cens == 1])
  n_c <- vapply(cs, function(s) sum(ts == s & cens == 1), 0)
  risk <- vapply(cs, function(s) sum(ts > s), 0) + n_c
  fac <- 1 - n_c / risk
  g_at <- function(u) prod(fac[cs <= u])
  g_minus <- vapply(ts, function(u) prod(fac[cs < u]), 0)
  # martingale integrals: int_0^{T_j} dM_Ck(u) / P(T >= u), n x n (j rows, k columns)
  lambda <- cens / (n:1)
  big_lambda <- cumsum(lambda)
  mart <- outer(seq_len(n), seq_len(n), function(j, k) {
    cens[k] * (ts[k] <= ts[j]) - big_lambda[pmin(j, k)]
  })
  d_mart <- rbind(mart[1, , drop = FALSE], mart[-1, , drop = FALSE] - mart[-n, , drop = FALSE])
  at_risk <- (n - seq_len(n) + 1) / n
  mat_int <- apply(d_mart / at_risk, 2, cumsum)
  k_t <- length(times)
  auc <- se <- rep(NA_real_, k_t)
  iid <- matrix(NA_real_, n, k_t)
  for (l in seq_len(k_t)) {
    t <- times[l]
    case <- ts < t & ds == 1
    ctrl <- ts > t
    if (!any(case) || !any(ctrl)) next
    w_case <- ifelse(case, 1 / (n * g_minus), 0)
    w_ctrl <- ifelse(ctrl, 1 / (n * g_at(t)), 0)
    f_t <- sum(w_case)
    s_t <- sum(w_ctrl)
    kern <- outer(mk[ctrl], mk[case], function(mj, mi) (mi > mj) + 0.5 * (mi == mj))
    hmat <- kern * outer(w_ctrl[ctrl], w_case[case]) * n^2
    h <- sum(hmat) / n^2
    col_sum <- numeric(n)
    col_sum[case] <- colSums(hmat)
    row_sum <- numeric(n)
    row_sum[ctrl] <- rowSums(hmat)
    dit <- n * w_case
    above_t <- ctrl / (sum(ctrl) / n)
    t1 <- colSums(col_sum[case] * (1 + mat_int[case, , drop = FALSE])) / n
    t3 <- colSums(h * (above_t + ((1 + mat_int) * dit - f_t) / f_t))
    by_k <- (t1 - t3) / (f_t * s_t)
    by_j <- (row_sum - n * h) / (f_t * s_t)
    by_i <- (col_sum - n * h * (above_t + (dit - f_t) / f_t)) / (f_t * s_t)
    iid[, l] <- (by_k + by_j + by_i) / n
    auc[l] <- h / (f_t * s_t)
    se[l] <- stats::sd(iid[, l]) / sqrt(n)
  }
  list(time = times, auc = auc, se = se, iid = iid)
}
