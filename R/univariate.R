# Univariate Cox regression, one model per candidate variable, plus the
# column helpers that every Cox-model function of the package uses.

#' Names of an endpoint's time and event columns, checked
#' @noRd
endpoint_columns <- function(data, endpoint, call_name) {
  if (!is.data.frame(data)) {
    stop(sprintf("%s(): `data` must be a data frame, not %s", call_name, class(data)[1]),
         call. = FALSE)
  }
  if (!is.character(endpoint) || length(endpoint) != 1L || !nzchar(endpoint)) {
    stop(sprintf("%s(): `endpoint` must be one endpoint name (e.g. \"os\")", call_name),
         call. = FALSE)
  }
  cols <- paste0(endpoint, c("_time", "_event"))
  miss <- setdiff(cols, names(data))
  if (length(miss)) {
    stop(sprintf("%s(): `endpoint` \"%s\" needs column(s) %s in `data`", call_name, endpoint,
                 paste(miss, collapse = ", ")), call. = FALSE)
  }
  tm <- data[[cols[1]]]
  ev <- data[[cols[2]]]
  if (!is.numeric(tm)) {
    stop(sprintf("%s(): column `%s` must be numeric", call_name, cols[1]), call. = FALSE)
  }
  if (is.logical(ev)) ev <- as.integer(ev)
  if (!is.numeric(ev) || any(!ev %in% c(0, 1, NA))) {
    stop(sprintf("%s(): column `%s` must be 0/1", call_name, cols[2]), call. = FALSE)
  }
  ok <- !is.na(tm)
  if (any(tm[ok] < 0)) {
    stop(sprintf("%s(): column `%s` has negative times (rows %s)", call_name, cols[1],
                 paste(utils::head(which(ok & tm < 0), 5), collapse = ", ")), call. = FALSE)
  }
  list(time = cols[1], event = cols[2])
}

#' Check candidate covariates and give them model-ready types
#'
#' Character and logical columns become factors; unused factor levels are
#' dropped; anything else that is not numeric is refused.
#' @noRd
prepare_covariates <- function(data, vars, call_name, arg = "vars") {
  if (!is.character(vars) || length(vars) == 0L) {
    stop(sprintf("%s(): `%s` must be a non-empty character vector of column names",
                 call_name, arg), call. = FALSE)
  }
  if (anyDuplicated(vars)) {
    stop(sprintf("%s(): `%s` names %s more than once", call_name, arg,
                 vars[duplicated(vars)][1]), call. = FALSE)
  }
  unknown <- setdiff(vars, names(data))
  if (length(unknown)) {
    stop(sprintf("%s(): unknown variable(s) in `%s`: %s", call_name, arg,
                 paste(unknown, collapse = ", ")), call. = FALSE)
  }
  bad <- grep("^[A-Za-z.][A-Za-z0-9._]*$", vars, invert = TRUE, value = TRUE)
  if (length(bad)) {
    stop(sprintf("%s(): `%s` must be syntactic R names; rename %s", call_name, arg,
                 paste(bad, collapse = ", ")), call. = FALSE)
  }
  for (v in vars) {
    x <- data[[v]]
    if (is.character(x) || is.logical(x)) x <- factor(x)
    if (is.factor(x)) {
      x <- droplevels(x)
      if (nlevels(x) < 2L) {
        stop(sprintf("%s(): variable `%s` has fewer than two observed levels", call_name, v),
             call. = FALSE)
      }
    } else if (!is.numeric(x)) {
      stop(sprintf("%s(): variable `%s` must be numeric, factor, character or logical, not %s",
                   call_name, v, class(x)[1]), call. = FALSE)
    }
    data[[v]] <- x
  }
  data
}

#' Levels of a factor without events (empty for non-factors)
#' @noRd
zero_event_levels <- function(x, event) {
  if (!is.factor(x)) return(character())
  ev <- tapply(event, x, sum)
  names(ev)[!is.na(ev) & ev == 0]
}

#' Stop when a factor level has no events
#' @noRd
check_level_events <- function(data, vars, event, call_name) {
  for (v in vars) {
    zero <- zero_event_levels(data[[v]], data[[event]])
    if (length(zero)) {
      stop(sprintf(paste0("%s(): variable `%s` has level(s) with zero events: %s ",
                          "(the hazard ratio is infinite; merge levels or use firth_cox())"),
                   call_name, v, paste(zero, collapse = ", ")), call. = FALSE)
    }
  }
  invisible(TRUE)
}

#' Complete rows for an endpoint and variables, with a message on drops
#' @noRd
complete_rows <- function(data, cols, call_name) {
  keep <- stats::complete.cases(data[, cols, drop = FALSE])
  if (any(!keep)) {
    message(sprintf("%s(): dropped %d row(s) with missing values in %s", call_name, sum(!keep),
                    paste(cols[vapply(cols, function(c) anyNA(data[[c]]), logical(1))],
                          collapse = ", ")))
  }
  data[keep, , drop = FALSE]
}

#' A Surv() formula for an endpoint and a set of terms
#'
#' Its environment is the caller's frame, so that refits by `update()` (as in
#' `MASS::stepAIC`) find the caller's data and never a same-named object
#' elsewhere.
#' @noRd
surv_formula <- function(ep, vars, env = parent.frame()) {
  rhs <- if (length(vars)) paste(vars, collapse = " + ") else "1"
  stats::as.formula(sprintf("survival::Surv(%s, %s) ~ %s", ep$time, ep$event, rhs), env = env)
}

#' Univariate Cox regression
#'
#' Fits one Cox proportional hazards model per candidate variable
#' (`survival::coxph`, Efron ties) on the rows complete for that variable and
#' the endpoint. Numeric variables give one row (hazard ratio per unit);
#' factor, character and logical variables give one row per non-reference
#' level, against the first level (the reference). Confidence limits are Wald
#' limits `exp(beta +/- z * se)`; `p_value` is the Wald test of the row's
#' coefficient and `p_variable` the likelihood-ratio test of the whole
#' variable (all its levels at once; equal to the Wald p in spirit for one
#' coefficient).
#'
#' @param data A cohort table (one row per patient).
#' @param endpoint Endpoint name: columns `<endpoint>_time` and
#'   `<endpoint>_event` must exist (see [validate_cohort()]).
#' @param vars Names of the candidate columns.
#' @param conf_level Confidence level of the intervals.
#' @return A data frame with one row per term: `variable`, `term` (column
#'   name as it appears in the model), `level` (factor level, `NA` for a
#'   numeric variable), `reference` (reference level), `hr`, `lower`, `upper`,
#'   `p_value`, `p_variable`, `n`, `events`.
#' @references Cox DR (1972). Regression models and life-tables. JRSS-B 34:187-220.
#' @examples
#' d <- survival::lung
#' d$os_time <- d$time / 30.44; d$os_event <- as.integer(d$status == 2)
#' d$sex <- factor(d$sex, 1:2, c("male", "female"))
#' univariate_cox(d, "os", c("age", "sex", "ph.ecog"))
#' @export
univariate_cox <- function(data, endpoint, vars, conf_level = 0.95) {
  ep <- endpoint_columns(data, endpoint, "univariate_cox")
  data <- prepare_covariates(data, vars, "univariate_cox")
  if (!is.numeric(conf_level) || length(conf_level) != 1L || conf_level <= 0 || conf_level >= 1) {
    stop("univariate_cox(): `conf_level` must be one number in (0, 1)", call. = FALSE)
  }
  z <- stats::qnorm(1 - (1 - conf_level) / 2)
  rows <- lapply(vars, function(v) {
    d <- data[stats::complete.cases(data[, c(ep$time, ep$event, v)]), , drop = FALSE]
    if (is.factor(d[[v]])) d[[v]] <- droplevels(d[[v]])
    if (sum(d[[ep$event]]) < 1L) {
      stop(sprintf("univariate_cox(): no events among rows complete for `%s`", v), call. = FALSE)
    }
    check_level_events(d, v, ep$event, "univariate_cox")
    fit <- survival::coxph(surv_formula(ep, v), data = d)
    if (anyNA(stats::coef(fit))) {
      stop(sprintf("univariate_cox(): variable `%s` is constant among complete rows", v),
           call. = FALSE)
    }
    b <- stats::coef(fit)
    se <- sqrt(diag(stats::vcov(fit)))
    lrt <- 2 * diff(fit$loglik)
    fac <- is.factor(d[[v]])
    data.frame(variable = v, term = names(b),
               level = if (fac) levels(d[[v]])[-1] else NA_character_,
               reference = if (fac) levels(d[[v]])[1] else NA_character_,
               hr = exp(b), lower = exp(b - z * se), upper = exp(b + z * se),
               p_value = 2 * stats::pnorm(-abs(b / se)),
               p_variable = stats::pchisq(lrt, df = length(b), lower.tail = FALSE),
               n = fit$n, events = fit$nevent, stringsAsFactors = FALSE, row.names = NULL)
  })
  do.call(rbind, rows)
}
