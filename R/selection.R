# Multivariable Cox model selection: stepwise AIC (MASS::stepAIC on a
# survival::coxph fit) or univariate-then-multivariable significance.

#' Multivariable Cox model selection
#'
#' Chooses covariates for a multivariable Cox model among `candidates`, on
#' the rows complete for the endpoint and all candidates, and refits the
#' chosen model with [rms::cph()] (`x = TRUE, y = TRUE, surv = TRUE`) so that
#' [build_nomogram()], [calibration_test()] and `rms` validation functions
#' apply directly.
#'
#' Methods:
#' * `"backward"`: backward elimination by AIC from the full model,
#'   [MASS::stepAIC()] with `direction = "backward"` (the model path of study
#'   t3n1).
#' * `"both"`: hybrid forward/backward AIC starting from the null model and
#'   bounded by the full model, `MASS::stepAIC(direction = "both")` (study
#'   cptdn).
#' * `"significant"`: variables with univariate likelihood-ratio p <
#'   `p_enter` ([univariate_cox()], column `p_variable`) enter a
#'   multivariable model; then, one at a time, the variable with the largest
#'   likelihood-ratio p (model with versus without it, all levels of a factor
#'   together) is removed while that p is >= `p_enter` (study stage2). This
#'   elimination loop is written here; the fits are `survival::coxph`.
#'
#' AIC is `-2 log partial likelihood + k * (number of coefficients)` as in
#' `extractAIC()` for `coxph` (Efron ties).
#'
#' Checks before any fit, each naming the variable: unknown names, a factor
#' level with zero events, aliased (collinear) candidates, and fewer than
#' `min_epv` events per candidate coefficient (warning or error by
#' `epv_action`).
#'
#' @param data A cohort table.
#' @param endpoint Endpoint name (columns `<endpoint>_time`, `<endpoint>_event`).
#' @param candidates Names of the candidate covariate columns (syntactic names).
#' @param method `"backward"`, `"both"` or `"significant"`.
#' @param p_enter Significance level of the `"significant"` method.
#' @param min_epv Minimum events per candidate coefficient.
#' @param epv_action `"warn"` or `"error"` when events per coefficient < `min_epv`.
#' @param time_inc `time.inc` of the final [rms::cph()] fit (time unit of the
#'   endpoint, months in cohort tables).
#' @param ... Passed to [MASS::stepAIC()] (e.g. `k`, `steps`).
#' @return An object of class `cox_selection`: `fit` (the final `cph`),
#'   `selected` (variable names), `path` (data frame `step`, `action`
#'   (`"start"`, `"remove"`, `"add"`), `variable`, `AIC`, `p_value`),
#'   `univariate` (for `"significant"`), `method`, `endpoint`, `candidates`,
#'   `data` (the complete rows used), `formula`.
#' @references Venables WN, Ripley BD (2002). Modern Applied Statistics with S,
#'   4th ed., Springer (stepAIC). Harrell FE (2015). Regression Modeling
#'   Strategies, 2nd ed., Springer.
#' @examples
#' d <- na.omit(survival::pbc[, c("time", "status", "age", "bili", "albumin", "sex")])
#' d$os_time <- d$time / 30.44; d$os_event <- as.integer(d$status == 2)
#' sel <- select_cox(d, "os", c("age", "bili", "albumin", "sex"), method = "backward")
#' sel
#' @export
select_cox <- function(data, endpoint, candidates, method = c("backward", "both", "significant"),
                       p_enter = 0.05, min_epv = 10, epv_action = c("warn", "error"),
                       time_inc = 12, ...) {
  method <- match.arg(method)
  epv_action <- match.arg(epv_action)
  cn <- "select_cox"
  ep <- endpoint_columns(data, endpoint, cn)
  data <- prepare_covariates(data, candidates, cn, arg = "candidates")
  if (!is.numeric(p_enter) || length(p_enter) != 1L || p_enter <= 0 || p_enter >= 1) {
    stop("select_cox(): `p_enter` must be one number in (0, 1)", call. = FALSE)
  }
  d <- complete_rows(data[, c(ep$time, ep$event, candidates), drop = FALSE],
                     c(ep$time, ep$event, candidates), cn)
  d <- prepare_covariates(d, candidates, cn, arg = "candidates")
  check_level_events(d, candidates, ep$event, cn)
  check_aliased(d, candidates, cn)
  n_events <- sum(d[[ep$event]])
  n_coef <- sum(vapply(candidates, function(v) if (is.factor(d[[v]])) nlevels(d[[v]]) - 1L else 1L,
                       integer(1)))
  if (n_events / n_coef < min_epv) {
    msg <- sprintf(paste0("select_cox(): %d events for %d candidate coefficient(s) (%s): ",
                          "%.1f events per variable, below `min_epv` = %g"),
                   n_events, n_coef, paste(candidates, collapse = ", "), n_events / n_coef, min_epv)
    if (epv_action == "error") stop(msg, call. = FALSE) else warning(msg, call. = FALSE)
  }

  univariate <- NULL
  if (method == "significant") {
    univariate <- univariate_cox(d, endpoint, candidates)
    res <- select_significant(d, ep, candidates, univariate, p_enter)
  } else {
    res <- select_stepaic(d, ep, candidates, method, ...)
  }
  if (!length(res$selected)) {
    stop(sprintf("select_cox(): method \"%s\" kept no candidate among %s; no model to fit",
                 method, paste(candidates, collapse = ", ")), call. = FALSE)
  }
  formula <- surv_formula(ep, res$selected)
  fit <- fit_cph(formula, d, time_inc)
  structure(list(fit = fit, selected = res$selected, path = res$path, univariate = univariate,
                 method = method, endpoint = endpoint, candidates = candidates, data = d,
                 formula = formula),
            class = "cox_selection")
}

#' An rms::cph fit with the datadist of its data stored in the fit
#'
#' The formula is written literally into the call, so `update(fit, data = )`
#' refits on other data. The convergence criterion is that of `coxph`
#' (`eps = 1e-9`, singularity tolerance near `coxph`'s `toler.chol`), so the
#' coefficients equal the `coxph` fit's.
#' @noRd
fit_cph <- function(formula, data, time_inc) {
  dd <- rms::datadist(data)
  old <- options(datadist = dd)
  on.exit(options(old), add = TRUE)
  eval(bquote(rms::cph(.(formula), data = data, x = TRUE, y = TRUE, surv = TRUE,
                       time.inc = .(time_inc), eps = 1e-9, tol = 1e-12, iter.max = 30)))
}

#' Stop when a candidate is a linear combination of others
#' @noRd
check_aliased <- function(d, vars, call_name) {
  mm <- stats::model.matrix(stats::as.formula(paste("~", paste(vars, collapse = " + "))), d)
  q <- qr(mm)
  if (q$rank < ncol(mm)) {
    alias_cols <- q$pivot[(q$rank + 1L):ncol(mm)]
    who <- unique(vars[attr(mm, "assign")[alias_cols]])
    stop(sprintf(paste0("%s(): collinear candidates: %s (coefficient %s) is a linear ",
                        "combination of other candidates or constant; drop it"),
                 call_name, paste(who, collapse = ", "),
                 paste(colnames(mm)[alias_cols], collapse = ", ")), call. = FALSE)
  }
  invisible(TRUE)
}

#' Stepwise AIC with MASS::stepAIC on coxph fits
#' @noRd
select_stepaic <- function(d, ep, candidates, method, ...) {
  full_formula <- surv_formula(ep, candidates)
  if (method == "backward") {
    start <- survival::coxph(full_formula, data = d)
    scope <- NULL
  } else {
    start <- survival::coxph(surv_formula(ep, character()), data = d)
    scope <- list(lower = ~1, upper = stats::formula(survival::coxph(full_formula, data = d)))
  }
  step <- if (is.null(scope)) {
    MASS::stepAIC(start, direction = "backward", trace = 0, ...)
  } else {
    MASS::stepAIC(start, scope = scope, direction = "both", trace = 0, ...)
  }
  an <- step$anova
  s <- trimws(as.character(an$Step))
  action <- ifelse(s == "", "start", ifelse(substr(s, 1, 1) == "-", "remove", "add"))
  path <- data.frame(step = seq_along(s) - 1L, action = action,
                     variable = ifelse(s == "", NA_character_, trimws(substring(s, 2))),
                     AIC = an$AIC, p_value = NA_real_, stringsAsFactors = FALSE)
  selected <- attr(stats::terms(step), "term.labels")
  list(selected = candidates[candidates %in% selected], path = path)
}

#' Univariate screen, then backward elimination by likelihood-ratio p
#' @noRd
select_significant <- function(d, ep, candidates, univariate, p_enter) {
  p_uni <- tapply(univariate$p_variable, univariate$variable, min)[candidates]
  current <- candidates[p_uni < p_enter]
  aic <- function(fit) -2 * fit$loglik[length(fit$loglik)] + 2 * length(stats::coef(fit))
  if (!length(current)) {
    return(list(selected = character(), path = data.frame(
      step = 0L, action = "start", variable = NA_character_, AIC = NA_real_, p_value = NA_real_)))
  }
  fit <- survival::coxph(surv_formula(ep, current), data = d)
  path <- data.frame(step = 0L, action = "start", variable = NA_character_, AIC = aic(fit),
                     p_value = NA_real_, stringsAsFactors = FALSE)
  repeat {
    p_drop <- vapply(current, function(v) {
      reduced <- survival::coxph(surv_formula(ep, setdiff(current, v)), data = d)
      stats::pchisq(2 * (fit$loglik[2] - reduced$loglik[length(reduced$loglik)]),
                    df = length(stats::coef(fit)) - length(stats::coef(reduced)),
                    lower.tail = FALSE)
    }, numeric(1))
    worst <- which.max(p_drop)
    if (p_drop[worst] < p_enter || length(current) == 0L) break
    current <- current[-worst]
    if (!length(current)) {
      path <- rbind(path, data.frame(step = nrow(path), action = "remove",
                                     variable = names(p_drop)[worst], AIC = NA_real_,
                                     p_value = p_drop[[worst]]))
      break
    }
    fit <- survival::coxph(surv_formula(ep, current), data = d)
    path <- rbind(path, data.frame(step = nrow(path), action = "remove",
                                   variable = names(p_drop)[worst], AIC = aic(fit),
                                   p_value = p_drop[[worst]]))
  }
  rownames(path) <- NULL
  list(selected = current, path = path)
}

#' @export
print.cox_selection <- function(x, ...) {
  cat(sprintf("Cox model selection (%s) for endpoint '%s': %d patients, %d events\n",
              x$method, x$endpoint, nrow(x$data), sum(x$fit$y[, 2])))
  cat("Candidates:", paste(x$candidates, collapse = ", "), "\n")
  cat("Selected:  ", paste(x$selected, collapse = ", "), "\n\nPath:\n")
  print(x$path, row.names = FALSE)
  b <- stats::coef(x$fit)
  se <- sqrt(diag(stats::vcov(x$fit)))
  cat("\nFinal model:\n")
  print(data.frame(hr = exp(b), lower = exp(b - 1.959964 * se), upper = exp(b + 1.959964 * se),
                   p_value = 2 * stats::pnorm(-abs(b / se))), digits = 3)
  invisible(x)
}

#' @export
as.data.frame.cox_selection <- function(x, ...) x$path
