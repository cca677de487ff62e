# Harrell's concordance index of a risk score with its standard error, CI and
# Z-test against 0.5, in the survival (infinitesimal jackknife) or the survcomp
# (Noether) convention.

#' Concordance index (Harrell's C) of a risk score
#'
#' Proportion of comparable pairs of patients in which the patient with the
#' earlier event has the higher risk score (higher score = higher risk).
#' A pair is comparable when the shorter follow-up ends in an event.
#'
#' @section Convention harrell (default, as survival::concordance):
#' Reproduces `survival::concordance(Surv(time, event) ~ score, reverse = TRUE)`.
#' Times closer than `sqrt(.Machine$double.eps)` are first merged with
#' [survival::aeqSurv()] as survival does; a censored time tied with an event
#' time counts as the longer one; two events at the same time are not
#' comparable. With \eqn{C}, \eqn{D}, \eqn{T} the numbers of concordant,
#' discordant and score-tied comparable pairs and \eqn{N = C + D + T},
#' \deqn{\hat C = (C + T/2) / N.}
#' The standard error is the infinitesimal jackknife (Therneau, concordance
#' vignette of the survival package): with \eqn{c_i, d_i, t_i} the counts of the
#' pairs containing subject \eqn{i} and \eqn{S = (C - D)/N},
#' \deqn{\widehat{\mathrm{Var}}(\hat C) = \frac14 \sum_i \left(\frac{c_i - d_i}{N} -
#'   \frac{S}{N}(c_i + d_i + t_i)\right)^2.}
#' The CI is \eqn{\hat C \pm 1.96\,\mathrm{se}} and `p_value` is two-sided,
#' \eqn{2\Phi(-|\hat C - 0.5|/\mathrm{se})}.
#'
#' @section Convention survcomp (as survcomp 1.1.6 concordance.index, method noether):
#' Pairs tied in the score are left out, a pair is comparable only when the
#' event time is strictly shorter (a censored time tied with an event time is
#' not comparable), and times are compared as given. With \eqn{c_i, d_i} the
#' concordant and discordant comparable pairs containing subject \eqn{i} and
#' \eqn{n} the number of patients,
#' \deqn{p_c = \frac{\sum_i c_i}{n(n-1)},\ p_d = \frac{\sum_i d_i}{n(n-1)},\
#'   \hat C = \frac{p_c}{p_c + p_d},}
#' and the Noether variance (Pencina and D'Agostino 2004) is
#' \deqn{\widehat{\mathrm{Var}}(\hat C) = \frac{4}{n (p_c + p_d)^4}
#'   (p_d^2 p_{cc} - 2 p_c p_d p_{cd} + p_c^2 p_{dd})}
#' with \eqn{p_{cc} = \sum_i c_i(c_i - 1) / (n(n-1)(n-2))},
#' \eqn{p_{dd} = \sum_i d_i(d_i - 1) / (n(n-1)(n-2))},
#' \eqn{p_{cd} = \sum_i c_i d_i / (n(n-1)(n-2))}. The CI is
#' \eqn{\hat C \pm 1.96\,\mathrm{se}} truncated to \[0, 1\], and `p_value` is the
#' one-sided normal p-value survcomp reports, in the direction of the estimate
#' (\eqn{1 - \Phi(z)} when \eqn{\hat C \ge 0.5}, \eqn{\Phi(z)} otherwise, with
#' \eqn{z = (\hat C - 0.5)/\mathrm{se}}); `p_value_two_sided` is twice it.
#' The two conventions differ when scores or times tie: say which one a report
#' uses.
#'
#' All counts are computed in O(n log n) time and O(n) memory with Fenwick trees
#' over the ranked scores, sweeping the sorted times.
#'
#' @param score Numeric risk score, higher = higher risk.
#' @param time Follow-up time (positive, finite; months by convention).
#' @param event Event indicator, 0/1 or logical.
#' @param convention `"harrell"` or `"survcomp"`, see the sections below.
#' @param na_action `"omit"` drops rows with a missing value in any argument
#'   (with a message giving the count); `"fail"` stops instead.
#' @return An object of class `c_index`: a list with `estimate`, `se`, `lower`,
#'   `upper`, `p_value`, `p_value_two_sided`, `n`, `events`, `convention`, the
#'   pair counts `concordant`, `discordant`, `tied_score` and `n_dropped`. Use
#'   `as.data.frame()` for a one-row data frame of these.
#'   An error is raised for fewer than 2 events, a constant score, or data
#'   without comparable pairs untied in the score. When the standard error is 0
#'   (complete separation: every comparable pair concordant, or every one
#'   discordant) the p-values are `NA`, with a warning.
#' @references
#' Harrell FE, Lee KL, Mark DB (1996). Multivariable prognostic models: issues
#' in developing models, evaluating assumptions and adequacy, and measuring and
#' reducing errors. Statistics in Medicine 15:361-387.
#'
#' Therneau T, Atkinson E. The concordance statistic. Vignette of the R package
#' survival.
#'
#' Pencina MJ, D'Agostino RB (2004). Overall C as a measure of discrimination in
#' survival analysis: model specific population value and confidence interval
#' estimation. Statistics in Medicine 23:2109-2123.
#'
#' Haibe-Kains B, Desmedt C, Sotiriou C, Bontempi G (2008). A comparative study
#' of survival models for breast cancer prognostication based on microarray
#' data: does a single gene beat them all? Bioinformatics 24:2200-2208.
#' @seealso [compare_c_index()]
#' @examples
#' d <- survival::lung
#' d <- d[!is.na(d$ph.ecog), ]
#' ci <- c_index(d$ph.ecog, d$time, d$status == 2)
#' ci
#' as.data.frame(c_index(d$ph.ecog, d$time, d$status == 2, convention = "survcomp"))
#' @export
c_index <- function(score, time, event, convention = c("harrell", "survcomp"),
                    na_action = c("omit", "fail")) {
  convention <- match.arg(convention)
  na_action <- match.arg(na_action)
  chk <- check_surv_input(time, event, score = score, na_action = na_action, min_events = 2L,
                          call_name = "c_index")
  check_score_varies(chk$score, "score", "c_index")
  fit <- c_index_fit(chk$score, chk$time, chk$event, convention)
  fit$n_dropped <- chk$n_dropped
  fit
}

#' Fit a C-index on checked input
#'
#' @param score,time,event Clean inputs (see [check_surv_input()]).
#' @param convention `"harrell"` or `"survcomp"`.
#' @param engine Pair-counting engine, see [concordance_counts()].
#' @return A `c_index` object without `n_dropped`.
#' @keywords internal
#' @noRd
c_index_fit <- function(score, time, event, convention, engine = "fast") {
  n <- length(time)
  if (convention == "harrell") {
    time <- survival::aeqSurv(survival::Surv(time, event))[, 1]
    counts <- concordance_counts(time, event, score, censored_tie_later = TRUE, engine = engine)
    conc <- sum(counts$concordant) / 2
    disc <- sum(counts$discordant) / 2
    tied <- sum(counts$tied) / 2
    npair <- conc + disc + tied
    if (npair == 0) stop("c_index(): no comparable pairs (every shorter follow-up is censored)",
                         call. = FALSE)
    estimate <- (conc + tied / 2) / npair
    somers <- (conc - disc) / npair
    dfbeta <- (counts$concordant - counts$discordant) / npair -
      (somers / npair) * (counts$concordant + counts$discordant + counts$tied)
    se <- sqrt(sum(dfbeta^2) / 4)
    z <- (estimate - 0.5) / se
    p_two <- 2 * stats::pnorm(-abs(z))
    p_value <- p_two
    half <- stats::qnorm(0.975) * se
    lower <- estimate - half
    upper <- estimate + half
  } else {
    if (n < 3L) stop("c_index(): the Noether variance needs at least 3 complete rows", call. = FALSE)
    counts <- concordance_counts(time, event, score, censored_tie_later = FALSE, engine = engine)
    ch <- counts$concordant
    dh <- counts$discordant
    conc <- sum(ch) / 2
    disc <- sum(dh) / 2
    tied <- sum(counts$tied) / 2
    if (conc + disc == 0) {
      stop("c_index(): no comparable pair is untied in `score` (survcomp convention)", call. = FALSE)
    }
    n1 <- n * (n - 1)
    n2 <- n1 * (n - 2)
    pc <- sum(ch) / n1
    pd <- sum(dh) / n1
    estimate <- pc / (pc + pd)
    pcc <- sum(ch * (ch - 1)) / n2
    pdd <- sum(dh * (dh - 1)) / n2
    pcd <- sum(ch * dh) / n2
    varp <- (4 / (pc + pd)^4) * (pd^2 * pcc - 2 * pc * pd * pcd + pc^2 * pdd)
    se <- sqrt(varp / n)
    z <- (estimate - 0.5) / se
    p_value <- stats::pnorm(z, lower.tail = estimate < 0.5)
    p_two <- 2 * stats::pnorm(-abs(z))
    half <- stats::qnorm(0.975) * se
    lower <- min(max(estimate - half, 0), 1)
    upper <- min(max(estimate + half, 0), 1)
  }
  if (!is.finite(z)) {
    warning(sprintf("c_index(): standard error is %g (complete separation?); p-value set to NA", se),
            call. = FALSE)
    p_value <- p_two <- NA_real_
  }
  structure(list(estimate = estimate, se = se, lower = lower, upper = upper, p_value = p_value,
                 p_value_two_sided = p_two, n = n, events = sum(event), convention = convention,
                 concordant = conc, discordant = disc, tied_score = tied),
            class = "c_index")
}

#' @rdname c_index
#' @param x A `c_index` object.
#' @param row.names,optional Ignored (for the generic).
#' @param ... Ignored.
#' @export
as.data.frame.c_index <- function(x, row.names = NULL, optional = FALSE, ...) {
  data.frame(estimate = x$estimate, se = x$se, lower = x$lower, upper = x$upper,
             p_value = x$p_value, p_value_two_sided = x$p_value_two_sided, n = x$n,
             events = x$events, convention = x$convention, concordant = x$concordant,
             discordant = x$discordant, tied_score = x$tied_score, stringsAsFactors = FALSE)
}

#' @rdname c_index
#' @param digits Significant digits for printing.
#' @export
print.c_index <- function(x, digits = 4, ...) {
  label <- if (x$convention == "harrell") {
    "Harrell's C (survival::concordance convention: score ties count 1/2, IJ standard error)"
  } else {
    "Harrell's C (survcomp convention: score ties dropped, Noether standard error)"
  }
  cat(label, "\n", sep = "")
  cat(sprintf("  n = %d, events = %d; comparable pairs: %.0f concordant, %.0f discordant, ",
              x$n, x$events, x$concordant, x$discordant),
      sprintf("%.0f tied in score%s\n", x$tied_score,
              if (x$convention == "harrell") " (count 1/2)" else " (left out)"), sep = "")
  cat(sprintf("  C = %s (95%% CI %s to %s), se = %s\n", format(x$estimate, digits = digits),
              format(x$lower, digits = digits), format(x$upper, digits = digits),
              format(x$se, digits = digits)))
  side <- if (x$convention == "harrell") "two-sided" else "one-sided, as survcomp reports it"
  cat(sprintf("  Z-test against 0.5: p = %s (%s)\n", format.pval(x$p_value, digits = 3), side))
  invisible(x)
}
