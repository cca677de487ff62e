# Optimal cutpoint of a continuous score by maximally selected log-rank statistics.

#' Optimal cutpoint by maximally selected log-rank statistics
#'
#' Learns a cutpoint of a risk score on one cohort (the training set) so that
#' it can be applied, locked, to others with [risk_groups()].
#'
#' For each candidate cut \eqn{c} (a distinct score value leaving at least
#' `minprop` and at most `1 - minprop` of the patients at or below it) the
#' standardised two-sample linear rank statistic with log-rank scores
#' \eqn{a_i = \delta_i - \sum_{j: t_j \le t_i} \delta_j / (N - r_j + 1)} is
#' \deqn{S_c = \frac{|\sum_{x_i \le c} a_i - m\bar a|}
#'   {\sqrt{\frac{m(N-m)}{N^2(N-1)}\,(N\sum a_i^2 - (\sum a_i)^2)}},}
#' with \eqn{m} patients at or below \eqn{c}. The cutpoint is the smallest
#' \eqn{c} maximising \eqn{S_c} (Lausen & Schumacher 1992; Hothorn & Lausen
#' 2003). This is what `survminer::surv_cutpoint()` reports: the computation is
#' done by [maxstat::maxstat.test()] (`smethod = "LogRank"`,
#' `maxprop = 1 - minprop`), an \eqn{O(N \log N)} sort-and-cumulate scan. The
#' p-value accounts for the search over cuts with the Lausen & Schumacher
#' (1992) approximation, \eqn{P(M \ge b) \approx 4\varphi(b)/b +
#' \varphi(b)(b - 1/b)\log\{(1-\epsilon_1)\epsilon_2/(\epsilon_1(1-\epsilon_2))\}}
#' (`pmethod = "Lau92"`).
#'
#' Groups: `score <= value` is `"low"` risk, `score > value` is `"high"` risk
#' (higher score = higher risk).
#'
#' @param score Numeric risk score (higher = higher risk).
#' @param time Follow-up times (> 0).
#' @param event Event indicator (0/1 or logical).
#' @param minprop Smallest proportion of patients in either group, in (0, 0.5).
#' @param na_action `"omit"` (drop incomplete rows with a message) or `"fail"`.
#' @return An object of class `cutpoint`: `value`, `statistic`, `p_value`
#'   (Lau92), `minprop`, `n`, `n_events`, `n_low`, `n_high`, `direction`, and
#'   `scan` (data frame of candidate `cut` and standardised `statistic`).
#' @references
#' Lausen B, Schumacher M (1992). Maximally selected rank statistics.
#' *Biometrics* 48:73-85.
#'
#' Hothorn T, Lausen B (2003). On the exact distribution of maximally selected
#' rank statistics. *Computational Statistics & Data Analysis* 43:121-137.
#' @examples
#' library(survival)
#' cp <- find_cutpoint(lung$age, lung$time, lung$status == 2)
#' cp
#' table(risk_groups(lung$age, cp))
#' @export
find_cutpoint <- function(score, time, event, minprop = 0.1, na_action = c("omit", "fail")) {
  na_action <- match.arg(na_action)
  if (!is.numeric(minprop) || length(minprop) != 1L || is.na(minprop) || minprop <= 0 || minprop >= 0.5)
    stop("find_cutpoint(): `minprop` must be a number in (0, 0.5)", call. = FALSE)
  chk <- check_surv_input(time, event, score = score, na_action = na_action,
                          call_name = "find_cutpoint")
  score <- chk$score
  n <- length(score)
  if (length(unique(score)) < 2L) stop("find_cutpoint(): `score` is constant", call. = FALSE)
  d <- data.frame(time = chk$time, event = chk$event, score = score)
  m <- tryCatch(
    maxstat::maxstat.test(survival::Surv(time, event) ~ score, data = d, smethod = "LogRank",
                          pmethod = "Lau92", minprop = minprop, maxprop = 1 - minprop),
    error = function(e) {
      stop("find_cutpoint(): no admissible cut of `score` with minprop = ", minprop,
           " (", conditionMessage(e), ")", call. = FALSE)
    })
  value <- unname(m$estimate)
  structure(list(value = value, statistic = unname(m$statistic), p_value = unname(m$p.value),
                 minprop = minprop, n = n, n_events = sum(chk$event),
                 n_low = sum(score <= value), n_high = sum(score > value),
                 direction = "score <= value: low; score > value: high",
                 scan = data.frame(cut = unname(m$cuts), statistic = unname(m$stats))),
            class = "cutpoint")
}

#' Risk groups from a locked cutpoint
#'
#' Applies a cutpoint learned by [find_cutpoint()] to any cohort without
#' refitting: `score <= cutpoint$value` is `"low"`, above is `"high"`.
#'
#' @param score Numeric risk score of the cohort to classify. Missing scores
#'   give missing groups (with a message giving the count).
#' @param cutpoint A `cutpoint` object from [find_cutpoint()].
#' @return A factor with levels `c("low", "high")`, one entry per score.
#' @export
risk_groups <- function(score, cutpoint) {
  if (!inherits(cutpoint, "cutpoint"))
    stop("risk_groups(): `cutpoint` must be a `cutpoint` object from find_cutpoint(), not ",
         class(cutpoint)[1], call. = FALSE)
  if (!is.numeric(score)) stop("risk_groups(): `score` must be numeric, not ", class(score)[1], call. = FALSE)
  if (any(is.infinite(score))) stop("risk_groups(): `score` must be finite", call. = FALSE)
  if (anyNA(score))
    message(sprintf("risk_groups(): %d missing score(s) left unassigned (NA)", sum(is.na(score))))
  factor(ifelse(score <= cutpoint$value, "low", "high"), levels = c("low", "high"))
}

#' @rdname find_cutpoint
#' @param x A `cutpoint` object.
#' @param row.names,optional Ignored (data frame method signature).
#' @param ... Unused.
#' @export
as.data.frame.cutpoint <- function(x, row.names = NULL, optional = FALSE, ...) {
  data.frame(value = x$value, statistic = x$statistic, p_value = x$p_value, minprop = x$minprop,
             n = x$n, n_events = x$n_events, n_low = x$n_low, n_high = x$n_high)
}

#' @rdname find_cutpoint
#' @export
print.cutpoint <- function(x, ...) {
  cat("Cutpoint by maximally selected log-rank statistic\n")
  cat(sprintf("  value = %.6g (score <= value: low risk, > value: high risk)\n", x$value))
  cat(sprintf("  statistic = %.4f, Lausen-Schumacher p = %.4g, minprop = %g\n",
              x$statistic, x$p_value, x$minprop))
  cat(sprintf("  learned on n = %d (%d events): %d low, %d high\n", x$n, x$n_events, x$n_low, x$n_high))
  invisible(x)
}

#' @rdname find_cutpoint
#' @export
plot.cutpoint <- function(x, ...) {
  ggplot2::ggplot(x$scan, ggplot2::aes(x = .data$cut, y = .data$statistic)) +
    ggplot2::geom_step() +
    ggplot2::geom_vline(xintercept = x$value, linetype = 2) +
    ggplot2::labs(x = "cut of score", y = "standardised log-rank statistic") +
    ggplot2::theme_bw()
}
