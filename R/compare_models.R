#' Compare prognostic models on each cohort (the papers' Table 2)
#'
#' For every model score column and every cohort: Harrell's C with 95% CI and
#' the Z-test against 0.5 ([c_index()]); the difference to the reference
#' model's C by Kang et al.'s U-statistic test and by survcomp's paired test
#' on log C ([compare_c_index()] with `"kang"` and `"log_t"`); the
#' cumulative/dynamic time-dependent AUC at each of `times` ([td_auc()]) and
#' its difference to the reference ([compare_td_auc()], unadjusted p); and the
#' ROC curve points ([td_roc_curve()]) for plotting.
#'
#' Within a cohort only patients with the endpoint and every score known are
#' used, so that all models are compared on the same patients (complete case).
#' An AUC at a time with no case or no control left in a cohort is NA (with a
#' message).
#'
#' @param data A cohort table.
#' @param endpoint Endpoint name (`<endpoint>_time`, `<endpoint>_event`).
#' @param scores Column names of the model scores (higher = higher risk, e.g.
#'   linear predictors); names, when given, are used as model labels.
#' @param reference The reference model: one of `scores` (column or label).
#' @param times Time points (months) for the AUC.
#' @param cohort Column naming the cohort of each row, or `NULL` to treat the
#'   table as one cohort.
#' @return An object of class `deepnomo_model_comparison`: `$table` (one row
#'   per cohort and model: `cohort`, `model`, `n`, `events`, `c_index`,
#'   `c_lower`, `c_upper`, `c_p` (two-sided), `c_diff`, `c_p_kang`,
#'   `c_p_log_t` (two-sided; survcomp itself reports the one-sided p),
#'   then per time `auc_<t>`, `auc_<t>_lower`, `auc_<t>_upper`,
#'   `auc_<t>_diff`, `auc_<t>_p`), `$roc` (curve points: `cohort`, `model`,
#'   `time`, `fpr`, `tpr`), `$reference`, `$times`. Methods: `print()`,
#'   `as.data.frame()`, `plot()` (TD-ROC curves).
#' @references Kang L, Chen W, Petrick NA, Gallas BD (2015). Comparing two
#'   correlated C indices with right-censored survival outcome. Stat Med
#'   34:685-703. Blanche P, Dartigues JF, Jacqmin-Gadda H (2013). Estimating
#'   and comparing time-dependent areas under receiver operating
#'   characteristic curves for censored event times with competing risks.
#'   Stat Med 32:5381-5397.
#' @examples
#' d <- survival::lung[, c("time", "status", "age", "ph.karno")]
#' d <- d[stats::complete.cases(d), ]
#' d <- data.frame(os_time = d$time, os_event = d$status - 1,
#'                 age = d$age, karno = -d$ph.karno)
#' compare_models(d, "os", scores = c(Age = "age", Karnofsky = "karno"),
#'                reference = "age", times = c(180, 365), cohort = NULL)
#' @export
compare_models <- function(data, endpoint, scores, reference, times = c(36, 60),
                           cohort = "cohort") {
  check_endpoint_columns(data, endpoint, "compare_models")
  check_columns(data, scores, "compare_models", "scores")
  labels <- if (is.null(names(scores))) scores else ifelse(nzchar(names(scores)), names(scores), scores)
  if (!is.character(reference) || length(reference) != 1L || !reference %in% c(scores, labels)) {
    stop(sprintf("compare_models(): `reference` must be one of the scores (%s)",
                 paste(labels, collapse = ", ")), call. = FALSE)
  }
  ref <- if (reference %in% scores) reference else scores[match(reference, labels)]
  if (!is.numeric(times) || length(times) == 0L || any(!is.finite(times)) || any(times <= 0)) {
    stop("compare_models(): `times` must be positive numbers", call. = FALSE)
  }
  for (s in scores) {
    if (!is.numeric(data[[s]])) stop(sprintf("compare_models(): score column '%s' is not numeric", s),
                                     call. = FALSE)
  }
  if (is.null(cohort)) {
    cohorts <- rep("all", nrow(data))
  } else {
    check_columns(data, cohort, "compare_models", "cohort")
    cohorts <- as.character(data[[cohort]])
  }
  tcol <- paste0(endpoint, "_time")
  ecol <- paste0(endpoint, "_event")
  rows <- list()
  rocs <- list()
  for (co in unique(cohorts)) {
    d <- data[cohorts == co, c(tcol, ecol, scores), drop = FALSE]
    d <- d[stats::complete.cases(d), , drop = FALSE]
    if (sum(d[[ecol]]) < 2L) {
      stop(sprintf("compare_models(): cohort '%s' has %d event(s) with all scores known; at least 2 needed",
                   co, sum(d[[ecol]])), call. = FALSE)
    }
    tt <- d[[tcol]]
    ee <- d[[ecol]]
    usable <- vapply(times, function(t) any(tt < t & ee == 1) && any(tt > t), TRUE)
    if (any(!usable)) {
      message(sprintf("compare_models(): cohort '%s': no cases or no controls at time(s) %s; AUC is NA",
                      co, paste(times[!usable], collapse = ", ")))
    }
    tu <- times[usable]
    for (k in seq_along(scores)) {
      s <- scores[k]
      ci <- as.data.frame(c_index(d[[s]], tt, ee))
      row <- data.frame(cohort = co, model = labels[k], n = nrow(d), events = sum(ee),
                        c_index = ci$estimate, c_lower = ci$lower, c_upper = ci$upper,
                        c_p = if (is.null(ci$p_value_two_sided)) ci$p_value else ci$p_value_two_sided,
                        c_diff = NA_real_, c_p_kang = NA_real_,
                        c_p_log_t = NA_real_, stringsAsFactors = FALSE)
      auc <- if (length(tu)) as.data.frame(td_auc(d[[s]], tt, ee, times = tu)) else NULL
      cmp <- NULL
      if (s != ref) {
        kang <- as.data.frame(compare_c_index(d[[s]], d[[ref]], tt, ee, method = "kang"))
        logt <- as.data.frame(compare_c_index(d[[s]], d[[ref]], tt, ee, method = "log_t"))
        row$c_diff <- kang$diff
        row$c_p_kang <- kang$p_value
        row$c_p_log_t <- if (is.null(logt$p_value_two_sided)) logt$p_value else logt$p_value_two_sided
        if (length(tu)) cmp <- as.data.frame(compare_td_auc(d[[s]], d[[ref]], tt, ee, times = tu))
      }
      for (t in times) {
        j <- match(t, tu)
        pre <- paste0("auc_", format_time(t))
        row[[pre]] <- if (is.na(j)) NA_real_ else auc$auc[j]
        row[[paste0(pre, "_lower")]] <- if (is.na(j)) NA_real_ else auc$lower[j]
        row[[paste0(pre, "_upper")]] <- if (is.na(j)) NA_real_ else auc$upper[j]
        row[[paste0(pre, "_diff")]] <- if (is.na(j) || is.null(cmp)) NA_real_ else cmp$diff[j]
        row[[paste0(pre, "_p")]] <- if (is.na(j) || is.null(cmp)) NA_real_ else cmp$p_value[j]
        if (!is.na(j)) {
          rc <- td_roc_curve(d[[s]], tt, ee, t)
          rocs[[length(rocs) + 1L]] <- data.frame(cohort = co, model = labels[k], time = t,
                                                  fpr = rc$curve$fpr, tpr = rc$curve$tpr,
                                                  stringsAsFactors = FALSE)
        }
      }
      rows[[length(rows) + 1L]] <- row
    }
  }
  tab <- do.call(rbind, rows)
  rownames(tab) <- NULL
  structure(list(table = tab, roc = do.call(rbind, rocs), reference = labels[match(ref, scores)],
                 times = times, endpoint = endpoint),
            class = "deepnomo_model_comparison")
}

format_time <- function(t) format(t, trim = TRUE, scientific = FALSE)

#' @export
as.data.frame.deepnomo_model_comparison <- function(x, ...) x$table

#' @method print deepnomo_model_comparison
#' @export
print.deepnomo_model_comparison <- function(x, digits = 3, ...) {
  cat(sprintf("Model comparison, endpoint %s, reference model %s (Harrell's C; Kang and log-C tests)\n",
              x$endpoint, x$reference))
  print_signif(x$table, digits)
  invisible(x)
}

#' @rdname compare_models
#' @param x A `deepnomo_model_comparison` object.
#' @param ... Unused.
#' @export
plot.deepnomo_model_comparison <- function(x, ...) {
  roc <- x$roc
  if (is.null(roc)) stop("plot(): no ROC curves (no usable time point)", call. = FALSE)
  auc <- x$table
  roc$time_label <- factor(paste0("t = ", format_time(roc$time)),
                           levels = paste0("t = ", format_time(x$times)))
  lab <- vapply(seq_len(nrow(roc)), function(i) {
    a <- auc[[paste0("auc_", format_time(roc$time[i]))]][auc$cohort == roc$cohort[i] &
                                                              auc$model == roc$model[i]]
    sprintf("%s (AUC %.3f)", roc$model[i], a)
  }, "")
  roc$curve <- lab
  ggplot2::ggplot(roc, ggplot2::aes(x = .data$fpr, y = .data$tpr, colour = .data$model,
                                    group = .data$curve)) +
    ggplot2::geom_abline(slope = 1, intercept = 0, linetype = 3, colour = "grey60") +
    ggplot2::geom_step(direction = "vh") +
    ggplot2::facet_grid(time_label ~ cohort) +
    ggplot2::coord_equal() +
    ggplot2::labs(x = "1 - specificity", y = "Sensitivity", colour = "Model",
                  title = sprintf("Time-dependent ROC, endpoint %s", x$endpoint)) +
    theme_deepnomo()
}

#' Time-dependent ROC curve with marginal IPCW weights
#'
#' Cumulative/dynamic ROC curve at time \eqn{t}: cases are patients with an
#' event before \eqn{t}, controls those still event-free after \eqn{t}. With
#' \eqn{\hat G} the Kaplan-Meier estimate of the censoring distribution
#' (events before censorings at tied times),
#' \deqn{TP_t(c) = \frac{\sum_i I(T_i < t, \delta_i = 1, M_i > c) / \hat G(T_i-)}
#'                      {\sum_i I(T_i < t, \delta_i = 1) / \hat G(T_i-)},\quad
#'       FP_t(c) = \frac{\sum_i I(T_i > t, M_i > c)}{\sum_i I(T_i > t)}}
#' (the controls' weights \eqn{1/\hat G(t)} are equal and cancel). The AUC is
#' the trapezoidal area under the curve through all thresholds, which counts
#' tied markers as 1/2; it equals the AUC of [td_auc()] (timeROC with
#' `weighting = "marginal"`). No standard error here: use [td_auc()].
#'
#' @param score Marker, higher = higher risk.
#' @param time Follow-up times.
#' @param event Event indicators (0/1).
#' @param t One time point.
#' @return A list of class `deepnomo_td_roc`: `time`, `auc`, `n_cases`,
#'   `n_controls`, and `curve` (data frame `threshold`, `fpr`, `tpr`, from
#'   (0, 0) to (1, 1)).
#' @references Blanche P, Dartigues JF, Jacqmin-Gadda H (2013). Stat Med
#'   32:5381-5397.
#' @examples
#' d <- survival::lung
#' r <- td_roc_curve(d$age, d$time, d$status - 1, 365)
#' r$auc
#' @export
td_roc_curve <- function(score, time, event, t) {
  x <- check_surv_input(time, event, score = score, call_name = "td_roc_curve")
  if (!is.numeric(t) || length(t) != 1L || !is.finite(t) || t <= 0) {
    stop("td_roc_curve(): `t` must be one positive time", call. = FALSE)
  }
  case <- x$time < t & x$event == 1L
  control <- x$time > t
  if (!any(case) || !any(control)) {
    stop(sprintf("td_roc_curve(): at t = %s there are %d case(s) and %d control(s); both needed",
                 format_time(t), sum(case), sum(control)), call. = FALSE)
  }
  w <- 1 / censoring_survival_before(x$time, x$event, x$time[case])
  thr <- sort(unique(x$score), decreasing = TRUE)
  sc <- x$score[case]
  sk <- x$score[control]
  tpr <- weighted_share_at_least(sc, w, thr)
  fpr <- weighted_share_at_least(sk, rep(1, length(sk)), thr)
  curve <- data.frame(threshold = c(Inf, thr), fpr = c(0, fpr), tpr = c(0, tpr))
  auc <- sum(diff(curve$fpr) * (utils::head(curve$tpr, -1) + utils::tail(curve$tpr, -1)) / 2)
  structure(list(time = t, auc = auc, n_cases = sum(case), n_controls = sum(control), curve = curve),
            class = "deepnomo_td_roc")
}

# Kaplan-Meier estimate of the censoring survival just before each of `at`,
# G(at-), with events taken to precede censorings at tied times (the
# convention of pec::ipcw(method = "marginal") that timeROC uses).
censoring_survival_before <- function(time, event, at) {
  st <- sort(time)
  ut <- sort(unique(time[event == 0L]))
  if (length(ut) == 0L) return(rep(1, length(at)))
  n_risk <- length(time) - findInterval(ut, st, left.open = TRUE) -
    tabulate(match(time[event == 1L], ut), nbins = length(ut))
  n_cens <- tabulate(match(time[event == 0L], ut), nbins = length(ut))
  g <- c(1, cumprod(1 - n_cens / n_risk))
  g[findInterval(at, ut, left.open = TRUE) + 1L]
}

# For each threshold, the weighted share of `x` at or above it (O(n log n)).
weighted_share_at_least <- function(x, w, thresholds) {
  o <- order(x)
  below <- findInterval(thresholds, x[o], left.open = TRUE)
  cw <- c(0, cumsum(w[o]))
  (cw[length(cw)] - cw[below + 1L]) / cw[length(cw)]
}

#' @method print deepnomo_td_roc
#' @export
print.deepnomo_td_roc <- function(x, ...) {
  cat(sprintf("Time-dependent ROC at t = %s: AUC %.4f (%d cases, %d controls, marginal IPCW)\n",
              format_time(x$time), x$auc, x$n_cases, x$n_controls))
  invisible(x)
}
