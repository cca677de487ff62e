# Pair counting behind the C-index estimators: per-subject concordant /
# discordant / tied-in-score counts over comparable pairs, and the pair sum of
# two scores' sign products needed for the covariance of two C-indices.
# Two engines give the same integers: "fast" (compiled, Fenwick trees, used by
# the exported functions) and "pairwise" (plain O(n^2) R, the reference used by
# the tests and the benchmark).

#' Per-subject concordance counts over comparable pairs
#'
#' A pair (i, j) is comparable when the shorter follow-up ends in an event. With
#' `censored_tie_later = TRUE` (survival and compareC) a censored time equal to
#' an event time counts as the longer one; with `FALSE` (survcomp) only strictly
#' longer times count. Two events at the same time are never comparable. A
#' comparable pair is concordant when the member with the event has the higher
#' score, discordant when it has the lower one, tied when the scores are equal.
#'
#' @param time,event Clean follow-up times and 0/1 event indicators.
#' @param score Numeric risk score (higher = higher risk).
#' @param censored_tie_later See above.
#' @param engine `"fast"` (O(n log n), compiled) or `"pairwise"` (O(n^2), R).
#' @return List of numeric vectors `concordant`, `discordant`, `tied`, each
#'   counting, for every subject, the comparable pairs it belongs to (so each
#'   pair is counted once for each member).
#' @keywords internal
#' @noRd
concordance_counts <- function(time, event, score, censored_tie_later = TRUE,
                               engine = c("fast", "pairwise")) {
  engine <- match.arg(engine)
  if (engine == "fast") {
    return(.concordance_counts_cpp(as.numeric(time), as.integer(event), as.numeric(score),
                                   censored_tie_later))
  }
  n <- length(time)
  conc <- disc <- tied <- numeric(n)
  for (i in seq_len(n)) {
    later <- if (event[i] == 1) {
      time > time[i] | (censored_tie_later & time == time[i] & event == 0)
    } else {
      logical(n)
    }
    earlier <- event == 1 & (time < time[i] | (censored_tie_later & time == time[i] & event[i] == 0))
    conc[i] <- sum(later & score < score[i]) + sum(earlier & score > score[i])
    disc[i] <- sum(later & score > score[i]) + sum(earlier & score < score[i])
    tied[i] <- sum((later | earlier) & score == score[i])
  }
  list(concordant = conc, discordant = disc, tied = tied)
}

#' Sum of sign products of two scores over comparable pairs
#'
#' \eqn{\sum_{i<j \textrm{ comparable}} \textrm{sign}(y_i - y_j)\,\textrm{sign}(z_i - z_j)},
#' comparability as in [concordance_counts()] with `censored_tie_later = TRUE`.
#' The fast engine is a divide and conquer over time with a Fenwick tree,
#' O(n log^2 n) time and O(n) memory.
#'
#' @inheritParams concordance_counts
#' @param y,z The two scores.
#' @return A number (an integer value).
#' @keywords internal
#' @noRd
concordance_cross <- function(time, event, y, z, engine = c("fast", "pairwise")) {
  engine <- match.arg(engine)
  if (engine == "fast") {
    return(.concordance_cross_cpp(as.numeric(time), as.integer(event), as.numeric(y), as.numeric(z)))
  }
  total <- 0
  for (i in which(event == 1)) {
    later <- time > time[i] | (time == time[i] & event == 0)
    total <- total + sum(sign(y[i] - y[later]) * sign(z[i] - z[later]))
  }
  total
}
