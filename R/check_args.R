# Argument checks shared by the estimators. Each message names the argument.

#' Check and clean score / time / event arguments
#'
#' Internal. Validates lengths and values of survival inputs and removes rows
#' with a missing value in any of them (with a message giving the count), or
#' stops when `na_action = "fail"`.
#'
#' @param time Follow-up times (> 0, finite).
#' @param event Event indicators: 0/1 or logical.
#' @param ... Named numeric vectors of the same length (scores, markers).
#' @param na_action `"omit"` (drop incomplete rows with a message) or `"fail"`.
#' @param min_events Minimum number of events required after NA removal.
#' @param call_name Function name used in messages.
#' @return A list with `time`, `event` (integer 0/1), the `...` vectors,
#'   `n_dropped` and `keep` (logical index into the original rows).
#' @keywords internal
#' @noRd
check_surv_input <- function(time, event, ..., na_action = c("omit", "fail"), min_events = 2L,
                             call_name = "function") {
  na_action <- match.arg(na_action)
  extra <- list(...)
  stop_arg <- function(arg, msg) stop(sprintf("%s(): `%s` %s", call_name, arg, msg), call. = FALSE)
  if (!is.numeric(time)) stop_arg("time", sprintf("must be numeric, not %s", class(time)[1]))
  n <- length(time)
  if (n == 0L) stop_arg("time", "is empty")
  if (is.logical(event)) event <- as.integer(event)
  if (!is.numeric(event)) stop_arg("event", sprintf("must be 0/1 or logical, not %s", class(event)[1]))
  if (length(event) != n) stop_arg("event", sprintf("has length %d but `time` has %d", length(event), n))
  for (nm in names(extra)) {
    x <- extra[[nm]]
    if (!is.numeric(x)) stop_arg(nm, sprintf("must be numeric, not %s", class(x)[1]))
    if (length(x) != n) stop_arg(nm, sprintf("has length %d but `time` has %d", length(x), n))
  }
  miss <- is.na(time) | is.na(event)
  for (x in extra) miss <- miss | is.na(x)
  if (any(miss)) {
    if (na_action == "fail") {
      stop(sprintf("%s(): %d row(s) with missing values (first: %s) and na_action = \"fail\"",
                   call_name, sum(miss), paste(utils::head(which(miss), 5), collapse = ", ")),
           call. = FALSE)
    }
    message(sprintf("%s(): dropped %d row(s) with missing values", call_name, sum(miss)))
  }
  keep <- !miss
  time <- time[keep]
  event <- event[keep]
  extra <- lapply(extra, function(x) x[keep])
  if (length(time) == 0L) stop_arg("time", "has no complete rows")
  if (any(!is.finite(time)) || any(time <= 0)) {
    bad <- which(!is.finite(time) | time <= 0)
    stop_arg("time", sprintf("must be positive and finite (rows %s)",
                             paste(utils::head(bad, 5), collapse = ", ")))
  }
  if (any(!event %in% c(0, 1))) {
    bad <- which(!event %in% c(0, 1))
    stop_arg("event", sprintf("must be 0/1 (rows %s)", paste(utils::head(bad, 5), collapse = ", ")))
  }
  for (nm in names(extra)) {
    if (any(!is.finite(extra[[nm]]))) stop_arg(nm, "must be finite")
  }
  if (sum(event) < min_events) {
    stop(sprintf("%s(): %d event(s); at least %d needed (all censored?)", call_name, sum(event),
                 min_events), call. = FALSE)
  }
  c(list(time = as.numeric(time), event = as.integer(event)), extra,
    list(n_dropped = sum(miss), keep = keep))
}

# A constant score ranks no patient above another: refuse it, naming the argument.
check_score_varies <- function(score, arg, call_name) {
  if (length(score) < 2L || all(score == score[1L])) {
    stop(sprintf("%s(): `%s` is constant: it ranks no patient above another", call_name, arg),
         call. = FALSE)
  }
  invisible(TRUE)
}
