#' Treatment decision from a predictive score (fit on training, apply locked)
#'
#' Fits, on the data given (the training cohort), the Cox model
#' \deqn{h(t) = h_0(t)\exp\{\beta_1 A + \beta_2 P + \beta_3 A P + \beta_4 R +
#'       \gamma^\top Z\}}
#' with `A` the indicator of the second treatment arm (e.g. ICT+CCRT against
#' CCRT, the first level), `P` the predictive score, `R` the prognostic score
#' and `Z` further covariates. [predict()] on any cohort then gives each
#' patient's predicted survival at `time` under each arm,
#' \eqn{\hat S(t \mid A = a, P, R, Z) = \exp\{-\hat\Lambda_0(t) e^{\hat\eta_a}\}}
#' (Breslow baseline of the training fit, `survival::survfit()` on the
#' patient with the treatment set to each arm), the predicted benefit
#' \eqn{\hat S(t \mid A = 1) - \hat S(t \mid A = 0)}, and for each threshold
#' the preferred-treatment group (second arm preferred when the benefit
#' exceeds the threshold). Within each group the actual arms are compared by
#' a Cox HR (second arm against first; Firth's penalized likelihood where an
#' arm has no events or there are fewer than `min_events`), the log-rank test,
#' and the treatment x group interaction (likelihood ratio test).
#'
#' @param data Training cohort table.
#' @param endpoint Endpoint name (`<endpoint>_time`, `<endpoint>_event`).
#' @param treatment Column of the treatment arm: a factor (or character) with
#'   two levels, the first being the reference arm.
#' @param prognostic Column of the prognostic score (or `NULL`).
#' @param predictive Column of the predictive score.
#' @param covariates Further covariate columns.
#' @param time Time (months) at which survival is predicted.
#' @param thresholds Benefit thresholds (absolute survival difference).
#' @param min_events Groups with fewer events use Firth's penalized Cox.
#' @return `treatment_decision()`: a fitted object of class
#'   `deepnomo_treatment_decision` (`$fit`, the `coxph` model; `$arms`;
#'   `$interaction` with the Wald and likelihood-ratio p-values of the
#'   treatment x predictive-score term on the training data). `predict()`:
#'   an object of class `deepnomo_treatment_effect` with `$patients` (one row
#'   per row of `newdata`: `surv_<arm>` for each arm, `benefit`, and
#'   `preferred_<threshold>`) and `$groups` (per threshold and group: `n`,
#'   `events`, `hr`, `lower`, `upper`, `p_value`, `method`, `logrank_p`,
#'   `p_interaction`). Methods: `print()`, `as.data.frame()`, `plot()`.
#' @references Tian L, Alizadeh AA, Gentles AJ, Tibshirani R (2014). A simple
#'   method for estimating interactions between a treatment and a large
#'   number of covariates. J Am Stat Assoc 109:1517-1532.
#' @examples
#' d <- survival::colon[survival::colon$etype == 2 & survival::colon$rx != "Lev", ]
#' d <- data.frame(dfs_time = d$time / 30.44, dfs_event = d$status,
#'                 treatment = droplevels(d$rx), nodes = d$nodes, age = d$age)
#' d <- d[stats::complete.cases(d), ]
#' td <- treatment_decision(d, "dfs", "treatment", prognostic = "age",
#'                          predictive = "nodes", time = 60)
#' head(as.data.frame(predict(td, d)))
#' @export
treatment_decision <- function(data, endpoint, treatment, prognostic, predictive,
                               covariates = character(), time = 60,
                               thresholds = c(0, 0.02, 0.05), min_events = 5) {
  fun <- "treatment_decision"
  check_endpoint_columns(data, endpoint, fun)
  check_columns(data, treatment, fun, "treatment")
  check_columns(data, predictive, fun, "predictive")
  if (!is.null(prognostic)) check_columns(data, prognostic, fun, "prognostic")
  check_columns(data, covariates, fun, rep("covariates", length(covariates)))
  if (!is.numeric(time) || length(time) != 1L || !is.finite(time) || time <= 0) {
    stop("treatment_decision(): `time` must be one positive time", call. = FALSE)
  }
  if (!is.numeric(thresholds) || length(thresholds) == 0L || anyNA(thresholds)) {
    stop("treatment_decision(): `thresholds` must be numbers", call. = FALSE)
  }
  for (v in c(predictive, prognostic)) {
    if (!is.numeric(data[[v]])) stop(sprintf("treatment_decision(): score column '%s' is not numeric", v),
                                     call. = FALSE)
  }
  arm <- data[[treatment]]
  if (is.numeric(arm) && !is.factor(arm)) {
    stop(sprintf("treatment_decision(): `treatment` column '%s' must be a factor or character", treatment),
         call. = FALSE)
  }
  arm <- as_group(arm, "treatment", fun)
  data[[treatment]] <- arm
  tcol <- paste0(endpoint, c("_time", "_event"))
  cols <- c(tcol, treatment, predictive, prognostic, covariates)
  d <- data[stats::complete.cases(data[cols]), cols, drop = FALSE]
  if (nrow(d) < nrow(data)) {
    message(sprintf("treatment_decision(): dropped %d row(s) with missing values", nrow(data) - nrow(d)))
  }
  by_arm <- tapply(d[[tcol[2]]], d[[treatment]], sum)
  if (any(by_arm == 0)) {
    stop(sprintf(paste("treatment_decision(): arm '%s' has no events in the training data;",
                       "the interaction model is not estimable"),
                 names(by_arm)[by_arm == 0][1]), call. = FALSE)
  }
  q <- function(x) if (length(x)) paste0("`", x, "`") else character()
  rhs_main <- c(q(treatment), q(predictive), if (!is.null(prognostic)) q(prognostic), q(covariates))
  lhs <- sprintf("survival::Surv(%s, %s)", q(tcol[1]), q(tcol[2]))
  f1 <- stats::as.formula(paste(lhs, "~", paste(c(rhs_main, paste0(q(treatment), ":", q(predictive))),
                                                collapse = " + ")))
  f0 <- stats::as.formula(paste(lhs, "~", paste(rhs_main, collapse = " + ")))
  fit <- survival::coxph(f1, data = d, model = TRUE)
  fit0 <- survival::coxph(f0, data = d)
  b <- stats::coef(fit)
  k <- length(b)
  interaction <- data.frame(term = names(b)[k], estimate = unname(b[k]),
                            se = sqrt(fit$var[k, k]),
                            p_wald = 2 * stats::pnorm(-abs(b[k] / sqrt(fit$var[k, k]))),
                            p_lrt = stats::anova(fit0, fit)[["Pr(>|Chi|)"]][2], row.names = NULL)
  structure(list(fit = fit, endpoint = endpoint, treatment = treatment, arms = levels(arm),
                 prognostic = prognostic, predictive = predictive, covariates = covariates,
                 time = time, thresholds = thresholds, min_events = min_events,
                 interaction = interaction, n = nrow(d), events = sum(d[[tcol[2]]])),
            class = "deepnomo_treatment_decision")
}

#' @rdname treatment_decision
#' @param object A fitted `deepnomo_treatment_decision`.
#' @param newdata Cohort to apply the locked model to. Rows with a missing
#'   model input get NA predictions; the group comparisons use rows with the
#'   endpoint and the actual treatment known.
#' @param ... Unused.
#' @export
predict.deepnomo_treatment_decision <- function(object, newdata, ...) {
  fun <- "predict.deepnomo_treatment_decision"
  if (!is.data.frame(newdata)) stop(sprintf("%s(): `newdata` must be a data frame", fun), call. = FALSE)
  inputs <- c(object$predictive, object$prognostic, object$covariates)
  check_columns(newdata, inputs, fun, rep("newdata", length(inputs)))
  ok <- stats::complete.cases(newdata[inputs])
  surv <- matrix(NA_real_, nrow(newdata), 2L, dimnames = list(NULL, object$arms))
  for (a in object$arms) {
    nd <- newdata[ok, inputs, drop = FALSE]
    nd[[object$treatment]] <- factor(a, levels = object$arms)
    sf <- survival::survfit(object$fit, newdata = nd)
    surv[ok, a] <- as.numeric(summary(sf, times = object$time, extend = TRUE)$surv)
  }
  benefit <- surv[, 2] - surv[, 1]
  patients <- data.frame(row = seq_len(nrow(newdata)))
  if ("patient_id" %in% names(newdata)) patients$patient_id <- newdata$patient_id
  patients[[paste0("surv_", make.names(object$arms[1]))]] <- surv[, 1]
  patients[[paste0("surv_", make.names(object$arms[2]))]] <- surv[, 2]
  patients$benefit <- benefit
  labels <- paste0(object$arms, "-preferred")
  groups <- list()
  has_outcome <- all(paste0(object$endpoint, c("_time", "_event")) %in% names(newdata)) &&
    object$treatment %in% names(newdata)
  for (thr in object$thresholds) {
    pref <- factor(ifelse(benefit > thr, labels[2], labels[1]), levels = labels)
    patients[[paste0("preferred_", format_time(thr))]] <- pref
    if (!has_outcome) next
    time <- newdata[[paste0(object$endpoint, "_time")]]
    event <- newdata[[paste0(object$endpoint, "_event")]]
    arm <- factor(as.character(newdata[[object$treatment]]), levels = object$arms)
    p_int <- interaction_lrt(time, event, arm, pref)
    for (g in labels) {
      keep <- !is.na(pref) & pref == g
      row <- cbind(threshold = thr, group = g, group_hr(time[keep], event[keep], arm[keep],
                                                       object$min_events))
      row$logrank_p <- logrank_p(time[keep], event[keep], arm[keep])
      row$p_interaction <- p_int
      groups[[length(groups) + 1L]] <- row
    }
  }
  structure(list(patients = patients, groups = if (length(groups)) do.call(rbind, groups),
                 arms = object$arms, time = object$time, thresholds = object$thresholds,
                 endpoint = object$endpoint,
                 km = if (has_outcome) data.frame(
                   time = newdata[[paste0(object$endpoint, "_time")]],
                   event = newdata[[paste0(object$endpoint, "_event")]],
                   arm = factor(as.character(newdata[[object$treatment]]), levels = object$arms))),
            class = "deepnomo_treatment_effect")
}

#' @method print deepnomo_treatment_decision
#' @export
print.deepnomo_treatment_decision <- function(x, ...) {
  cat(sprintf("Treatment decision model (%s vs %s), endpoint %s, %d patients, %d events\n",
              x$arms[2], x$arms[1], x$endpoint, x$n, x$events))
  print(x$fit)
  cat(sprintf("Treatment x %s interaction: Wald p = %s, LRT p = %s\n", x$predictive,
              format_p(x$interaction$p_wald), format_p(x$interaction$p_lrt)))
  invisible(x)
}

#' @export
as.data.frame.deepnomo_treatment_effect <- function(x, ...) x$patients

#' @method print deepnomo_treatment_effect
#' @export
print.deepnomo_treatment_effect <- function(x, digits = 3, ...) {
  cat(sprintf("Predicted %s-month survival benefit of %s over %s: median %.3f (range %.3f to %.3f)\n",
              format_time(x$time), x$arms[2], x$arms[1], stats::median(x$patients$benefit, na.rm = TRUE),
              min(x$patients$benefit, na.rm = TRUE), max(x$patients$benefit, na.rm = TRUE)))
  if (!is.null(x$groups)) print_signif(x$groups, digits)
  invisible(x)
}

#' @rdname treatment_decision
#' @param x A `deepnomo_treatment_effect` (from `predict()`).
#' @param type `"km"`: Kaplan-Meier curves of the actual arms within each
#'   preferred-treatment group at `threshold`; `"benefit"`: distribution of
#'   the predicted benefit.
#' @param threshold Which threshold's groups to draw.
#' @param subtitle Optional subtitle (for instance the cohort).
#' @details `plot(type = "km")` draws one [survminer::ggsurvplot()] panel
#'   (curves and numbers at risk) per preferred-treatment group, titled with
#'   that group's hazard ratio and log-rank P, side by side with
#'   [survminer::arrange_ggsurvplots()]; it returns that arrangement (print it
#'   to draw, or write it with [save_figure()]). `type = "benefit"` returns a
#'   ggplot.
#' @export
plot.deepnomo_treatment_effect <- function(x, type = c("km", "benefit"), threshold = x$thresholds[1],
                                           subtitle = NULL, ...) {
  type <- match.arg(type)
  if (type == "benefit") {
    return(ggplot2::ggplot(x$patients, ggplot2::aes(x = .data$benefit)) +
             ggplot2::geom_histogram(bins = 30, fill = "grey60", colour = "grey30") +
             ggplot2::geom_vline(xintercept = x$thresholds, linetype = 2) +
             ggplot2::labs(x = sprintf("Predicted %s-month survival, %s minus %s", format_time(x$time),
                                       x$arms[2], x$arms[1]), y = "Patients",
                           subtitle = subtitle) +
             theme_deepnomo())
  }
  if (is.null(x$km)) stop("plot(): `newdata` had no outcome or treatment column", call. = FALSE)
  col <- paste0("preferred_", format_time(threshold))
  if (!col %in% names(x$patients)) stop("plot(): `threshold` is not one of the fitted thresholds",
                                        call. = FALSE)
  d <- cbind(x$km, group = x$patients[[col]])
  d <- d[stats::complete.cases(d), , drop = FALSE]
  gtab <- x$groups[x$groups$threshold == threshold, , drop = FALSE]
  gtab <- gtab[gtab$group %in% d$group, , drop = FALSE]
  panels <- lapply(seq_len(nrow(gtab)), function(i) {
    di <- d[d$group == gtab$group[i], , drop = FALSE]
    di$arm <- droplevels(factor(di$arm, levels = x$arms))
    fit <- survival::survfit(survival::Surv(time, event) ~ arm, data = di)
    survminer::ggsurvplot(fit, data = di, censor.shape = 3, censor.size = 2,
                          legend.labs = levels(di$arm), legend.title = "Treatment",
                          title = sprintf("%s: HR %.2f (%.2f-%.2f), log-rank P = %s", gtab$group[i],
                                          gtab$hr[i], gtab$lower[i], gtab$upper[i],
                                          format_p(gtab$logrank_p[i])),
                          xlab = "Months", ylab = "Survival probability", break.time.by = 12,
                          risk.table = TRUE, risk.table.height = 0.3,
                          risk.table.title = "Number at risk", risk.table.fontsize = 2.8,
                          risk.table.y.text = FALSE, ggtheme = theme_deepnomo(),
                          tables.theme = theme_deepnomo())
  })
  survminer::arrange_ggsurvplots(panels, print = FALSE, ncol = length(panels), nrow = 1,
                                 title = sprintf("Preferred treatment at threshold %s%s",
                                                 format_time(threshold),
                                                 if (is.null(subtitle)) "" else paste0(", ", subtitle)),
                                 risk.table.height = 0.3)
}

#' Chemotherapy benefit by risk group and by cumulative dose
#'
#' Within each level of `risk_group`, the hazard ratio of the treatment
#' (second level against the first) with the treatment x risk-group
#' interaction (likelihood ratio test), by [subgroup_analysis()] (Firth's
#' penalized Cox where a level has no events in an arm or few events). When
#' `dose` is given, among the treated (second level) patients the same
#' analysis compares a cumulative dose above `dose_cut` against at most
#' `dose_cut` within each risk group.
#'
#' @param data A cohort table.
#' @param endpoint Endpoint name.
#' @param risk_group Column of the risk groups (factor).
#' @param treatment Column of the treatment (two levels; second = treated).
#' @param dose Column of the cumulative dose (numeric, e.g. mg/m2), or `NULL`.
#' @param dose_cut Dose cutoff.
#' @param min_events Levels with fewer events use Firth's penalized Cox.
#' @return An object of class `deepnomo_chemo_benefit`: `$treatment` and
#'   `$dose` (`deepnomo_subgroups` objects; `$dose` is `NULL` without
#'   `dose`). `as.data.frame()` stacks both tables with a column `analysis`;
#'   `plot()` draws forest plots.
#' @examples
#' d <- survival::colon[survival::colon$etype == 2 & survival::colon$rx != "Lev", ]
#' d <- data.frame(dfs_time = d$time / 30.44, dfs_event = d$status,
#'                 chemo = droplevels(d$rx),
#'                 risk = factor(ifelse(d$node4 == 1, "high", "low"), c("low", "high")))
#' chemo_benefit(d, "dfs", risk_group = "risk", treatment = "chemo")
#' @export
chemo_benefit <- function(data, endpoint, risk_group, treatment, dose = NULL, dose_cut = 160,
                          min_events = 5) {
  fun <- "chemo_benefit"
  check_endpoint_columns(data, endpoint, fun)
  check_columns(data, risk_group, fun, "risk_group")
  check_columns(data, treatment, fun, "treatment")
  arm <- as_group(data[[treatment]], "treatment", fun)
  if (!is.factor(arm)) stop("chemo_benefit(): `treatment` must be a factor with two levels", call. = FALSE)
  res <- list(treatment = subgroup_analysis(data, endpoint, treatment, risk_group, min_events),
              dose = NULL, dose_cut = dose_cut)
  if (!is.null(dose)) {
    check_columns(data, dose, fun, "dose")
    if (!is.numeric(data[[dose]])) stop(sprintf("chemo_benefit(): `dose` column '%s' is not numeric", dose),
                                        call. = FALSE)
    if (!is.numeric(dose_cut) || length(dose_cut) != 1L) {
      stop("chemo_benefit(): `dose_cut` must be one number", call. = FALSE)
    }
    treated <- data[!is.na(arm) & arm == levels(arm)[2], , drop = FALSE]
    lev <- c(paste0("<=", dose_cut), paste0(">", dose_cut))
    treated$dose_group <- factor(ifelse(treated[[dose]] > dose_cut, lev[2], lev[1]), levels = lev)
    res$dose <- subgroup_analysis(treated, endpoint, "dose_group", risk_group, min_events)
  }
  structure(res, class = "deepnomo_chemo_benefit")
}

#' @export
as.data.frame.deepnomo_chemo_benefit <- function(x, ...) {
  out <- cbind(analysis = "treatment", x$treatment$table)
  if (!is.null(x$dose)) out <- rbind(out, cbind(analysis = "dose", x$dose$table))
  out
}

#' @method print deepnomo_chemo_benefit
#' @export
print.deepnomo_chemo_benefit <- function(x, ...) {
  print(x$treatment)
  if (!is.null(x$dose)) {
    cat(sprintf("\nCumulative dose > %s vs <= %s among the treated:\n", x$dose_cut, x$dose_cut))
    print(x$dose)
  }
  invisible(x)
}

#' @rdname chemo_benefit
#' @param x A `deepnomo_chemo_benefit`.
#' @param analysis `"treatment"` or `"dose"`.
#' @param ... Unused.
#' @export
plot.deepnomo_chemo_benefit <- function(x, analysis = c("treatment", "dose"), ...) {
  analysis <- match.arg(analysis)
  if (analysis == "dose" && is.null(x$dose)) stop("plot(): no dose analysis (`dose` was NULL)", call. = FALSE)
  plot(x[[analysis]])
}

# --- internals ----------------------------------------------------------------

logrank_p <- function(time, event, group) {
  d <- data.frame(time = time, event = event, group = group)
  d <- d[stats::complete.cases(d), , drop = FALSE]
  if (length(unique(d$group)) < 2L || sum(d$event) == 0L) return(NA_real_)
  sd <- survival::survdiff(survival::Surv(time, event) ~ group, data = d)
  stats::pchisq(sd$chisq, length(sd$n) - 1L, lower.tail = FALSE)
}
