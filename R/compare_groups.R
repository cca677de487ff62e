# Survival comparison of risk groups: Kaplan-Meier, log-rank and Cox hazard ratios.

#' Compare survival between risk groups
#'
#' Per group: size, events, Kaplan-Meier survival at `times` with 95%
#' confidence intervals, and median survival; overall: the log-rank test; and
#' hazard ratios of each group against the first level from a Cox model.
#'
#' **Kaplan-Meier.** \eqn{\hat S(t) = \prod_{t_j \le t}(1 - d_j/n_j)} with
#' Greenwood's variance of \eqn{\log\hat S}, \eqn{\sum_{t_j\le t} d_j/\{n_j(n_j-d_j)\}};
#' the interval is \eqn{\hat S \exp(\pm z_{0.975}\,se)}, upper limit capped at 1
#' (the `conf.type = "log"` default of [survival::survfit()]). At a time beyond
#' a group's last follow-up the estimate is `NA` (the curve is not defined
#' there); before its first event it is 1. The median is the first time with
#' \eqn{\hat S \le 0.5}; where the curve sits exactly at 0.5 it is the midpoint
#' between that time and the next drop, as survfit; `NA` if not reached.
#'
#' **Log-rank.** With \eqn{O_g - E_g = \sum_j (d_{gj} - n_{gj} d_j / n_j)} and
#' hypergeometric covariance \eqn{V_{gh} = \sum_j d_j (n_j - d_j)/(n_j - 1)\,
#' (n_{gj}/n_j)(1[g=h] - n_{hj}/n_j)}, the statistic is
#' \eqn{(O-E)^\top V^{-}(O-E)} on \eqn{k-1} df (Mantel 1966; Peto & Peto 1972).
#'
#' **Hazard ratios.** [survival::coxph()] on the group factor (Efron ties),
#' Wald intervals and p-values, each level against the first (`high` vs `low`
#' for [risk_groups()] output). If a group has no events the Cox estimate
#' diverges, and the hazard ratios are `NA` with a note (use [firth_cox()]).
#'
#' @param group Group of each patient: factor (its levels, in order), character
#'   or logical. Every level must have at least one patient.
#' @param time Follow-up times (> 0), in months by the package convention.
#' @param event Event indicator (0/1 or logical).
#' @param times Time points for the survival estimates (same unit as `time`).
#' @param na_action `"omit"` (drop incomplete rows with a message) or `"fail"`.
#' @return An object of class `compare_groups`: `groups` (one row per group:
#'   `group`, `n`, `events`, `surv_<t>`, `surv_<t>_lower`, `surv_<t>_upper`
#'   for each `t` in `times`, `median`), `logrank` (`chisq`, `df`, `p_value`),
#'   `hr` (`group`, `hr`, `lower`, `upper`, `p_value`, against `reference`),
#'   `curves` (tidy Kaplan-Meier curves: `group`, `time`, `surv`, `lower`,
#'   `upper`, `n_risk`, `n_event`, `n_censor`), `notes` and `data` (the
#'   complete rows used: `group`, `time`, `event`).
#'   `as.data.frame()` gives the group table joined with the hazard ratios
#'   (`hr`, `hr_lower`, `hr_upper`, `hr_p_value`; `NA` for the reference) and
#'   the log-rank `logrank_chisq`, `logrank_df`, `logrank_p`.
#' @references
#' Kaplan EL, Meier P (1958). Nonparametric estimation from incomplete
#' observations. *JASA* 53:457-481.
#'
#' Mantel N (1966). Evaluation of survival data and two new rank order
#' statistics arising in its consideration. *Cancer Chemotherapy Reports*
#' 50:163-170.
#' @examples
#' library(survival)
#' g <- factor(ifelse(lung$ph.ecog >= 2, "high", "low"), levels = c("low", "high"))
#' cmp <- compare_groups(g, lung$time / 30.44, lung$status == 2, times = c(6, 12))
#' as.data.frame(cmp)
#' @export
compare_groups <- function(group, time, event, times = c(36, 60), na_action = c("omit", "fail")) {
  na_action <- match.arg(na_action)
  stop_arg <- function(arg, msg) stop(sprintf("compare_groups(): `%s` %s", arg, msg), call. = FALSE)
  if (!(is.factor(group) || is.character(group) || is.logical(group)))
    stop_arg("group", sprintf("must be a factor, character or logical, not %s", class(group)[1]))
  if (length(group) != length(time))
    stop_arg("group", sprintf("has length %d but `time` has %d", length(group), length(time)))
  if (!is.numeric(times) || length(times) == 0L || anyNA(times) || any(!is.finite(times)) || any(times <= 0))
    stop_arg("times", "must be positive finite numbers")
  levs <- if (is.factor(group)) levels(group) else sort(unique(stats::na.omit(as.character(group))))
  tm <- time
  if (is.numeric(tm)) tm[is.na(group)] <- NA
  chk <- check_surv_input(tm, event, na_action = na_action, call_name = "compare_groups")
  g <- factor(as.character(group)[chk$keep], levels = levs)
  time <- chk$time
  event <- chk$event
  counts <- table(g)
  if (length(levs) < 2L) stop_arg("group", "must have at least two groups")
  if (any(counts == 0L))
    stop_arg("group", sprintf("has no patients in level(s) %s",
                              paste(names(counts)[counts == 0L], collapse = ", ")))

  curves <- do.call(rbind, lapply(levs, function(l) km_curve(time[g == l], event[g == l], l)))
  rows <- lapply(levs, function(l) {
    cv <- curves[curves$group == l, ]
    out <- data.frame(group = l, n = sum(g == l), events = sum(event[g == l]))
    for (t in times) {
      est <- km_at(cv, t, max(time[g == l]))
      nm <- paste0("surv_", format(t, trim = TRUE))
      out[[nm]] <- est[1]
      out[[paste0(nm, "_lower")]] <- est[2]
      out[[paste0(nm, "_upper")]] <- est[3]
    }
    out$median <- km_median(cv)
    out
  })
  groups <- do.call(rbind, rows)
  notes <- character(0)
  late <- vapply(levs, function(l) any(times > max(time[g == l])), logical(1))
  if (any(late))
    notes <- sprintf("survival at times beyond the last follow-up of group(s) %s is NA",
                     paste(levs[late], collapse = ", "))
  if (any(is.na(groups$median))) notes <- c(notes, "median NA: survival does not reach 0.5")
  lr <- logrank_test(g, time, event)
  no_events <- levs[groups$events == 0]
  if (length(no_events)) {
    # the Cox estimate diverges (monotone likelihood): report NA, see firth_cox()
    hr <- data.frame(group = levs[-1], hr = NA_real_, lower = NA_real_, upper = NA_real_, p_value = NA_real_)
    notes <- c(notes, sprintf("no events in group(s) %s: Cox hazard ratios not estimable (NA); %s",
                              paste(no_events, collapse = ", "), "see firth_cox()"))
  } else {
    fit <- survival::coxph(survival::Surv(time, event) ~ g)
    cf <- summary(fit)$coefficients
    ci <- summary(fit)$conf.int
    hr <- data.frame(group = levs[-1], hr = unname(ci[, "exp(coef)"]), lower = unname(ci[, "lower .95"]),
                     upper = unname(ci[, "upper .95"]), p_value = unname(cf[, "Pr(>|z|)"]))
  }
  structure(list(groups = groups, logrank = lr, hr = hr, reference = levs[1], curves = curves,
                 times = times, notes = notes, data = data.frame(group = g, time = time, event = event)),
            class = "compare_groups")
}

# Kaplan-Meier curve of one group with Greenwood log-scale 95% limits.
km_curve <- function(time, event, label) {
  ut <- sort(unique(time))
  idx <- match(time, ut)
  n_event <- tabulate(idx[event == 1], length(ut))
  n_censor <- tabulate(idx[event == 0], length(ut))
  n_risk <- rev(cumsum(rev(n_event + n_censor)))
  surv <- cumprod(1 - n_event / n_risk)
  nr <- as.numeric(n_risk)
  gw <- cumsum(ifelse(n_event > 0, n_event / (nr * (nr - n_event)), 0))
  se <- sqrt(gw)
  z <- stats::qnorm(0.975)
  lower <- ifelse(surv > 0, surv * exp(-z * se), NA_real_)
  upper <- ifelse(surv > 0, pmin(1, surv * exp(z * se)), NA_real_)
  data.frame(group = label, time = ut, surv = surv, lower = lower, upper = upper,
             n_risk = n_risk, n_event = n_event, n_censor = n_censor, stringsAsFactors = FALSE)
}

# Survival estimate and limits at time t from a km_curve; NA past follow-up.
km_at <- function(cv, t, last) {
  if (t > last) return(c(NA_real_, NA_real_, NA_real_))
  i <- findInterval(t, cv$time)
  if (i == 0L) return(c(1, 1, 1))
  c(cv$surv[i], cv$lower[i], cv$upper[i])
}

# Median survival, survfit's convention for a curve resting exactly at 0.5.
km_median <- function(cv) {
  tol <- sqrt(.Machine$double.eps)
  i <- which(cv$surv <= 0.5 + tol)
  if (length(i) == 0L) return(NA_real_)
  i <- i[1]
  if (abs(cv$surv[i] - 0.5) < tol) {
    j <- which(cv$surv < 0.5 - tol)
    if (length(j) > 0L) return((cv$time[i] + cv$time[j[1]]) / 2)
  }
  cv$time[i]
}

# k-sample log-rank test by risk-set sums over the pooled distinct event times.
logrank_test <- function(g, time, event) {
  k <- nlevels(g)
  ut <- sort(unique(time[event == 1]))
  gi <- as.integer(g)
  # n_gj: patients of group g with time >= t_j; d_gj: events of g at t_j.
  n_gj <- vapply(seq_len(k), function(l) {
    tl <- sort(time[gi == l])
    length(tl) - findInterval(ut, tl, left.open = TRUE)
  }, numeric(length(ut)))
  d_gj <- vapply(seq_len(k), function(l) tabulate(match(time[gi == l & event == 1], ut), length(ut)),
                 numeric(length(ut)))
  n_gj <- matrix(n_gj, ncol = k)
  d_gj <- matrix(d_gj, ncol = k)
  nj <- rowSums(n_gj)
  dj <- rowSums(d_gj)
  oe <- colSums(d_gj - n_gj * dj / nj)
  f <- ifelse(nj > 1, dj * (nj - dj) / (nj - 1), 0)
  prop <- n_gj / nj
  v <- diag(colSums(f * prop), k) - crossprod(prop * sqrt(f))
  chisq <- drop(oe[-1] %*% solve(v[-1, -1, drop = FALSE], oe[-1]))
  data.frame(chisq = chisq, df = k - 1L, p_value = stats::pchisq(chisq, k - 1L, lower.tail = FALSE))
}

#' @rdname compare_groups
#' @param x A `compare_groups` object.
#' @param row.names,optional Ignored (data frame method signature).
#' @param ... Unused.
#' @export
as.data.frame.compare_groups <- function(x, row.names = NULL, optional = FALSE, ...) {
  out <- x$groups
  m <- match(out$group, x$hr$group)
  out$hr <- x$hr$hr[m]
  out$hr_lower <- x$hr$lower[m]
  out$hr_upper <- x$hr$upper[m]
  out$hr_p_value <- x$hr$p_value[m]
  out$logrank_chisq <- x$logrank$chisq
  out$logrank_df <- x$logrank$df
  out$logrank_p <- x$logrank$p_value
  out
}

#' @rdname compare_groups
#' @export
print.compare_groups <- function(x, ...) {
  cat("Survival by group (Kaplan-Meier, 95% CI)\n")
  print(x$groups, row.names = FALSE, digits = 4)
  cat(sprintf("\nLog-rank: chi-square = %.4g on %d df, p = %.4g\n",
              x$logrank$chisq, x$logrank$df, x$logrank$p_value))
  cat(sprintf("Cox hazard ratios vs %s:\n", x$reference))
  print(x$hr, row.names = FALSE, digits = 4)
  if (length(x$notes)) cat(paste0("Note: ", x$notes, "\n"), sep = "")
  invisible(x)
}

#' @rdname compare_groups
#' @param break_by Spacing of the time axis and of the number-at-risk table
#'   (default: the step of [pretty()] over the follow-up, about 6 steps).
#' @param title,xlab,ylab,legend_title Plot labels.
#' @details `plot()` draws the Kaplan-Meier curves with 95% bands, censoring
#'   marks, the log-rank p of the object and the numbers at risk below, with
#'   [survminer::ggsurvplot()] in [theme_deepnomo()]. It returns the
#'   `ggsurvplot` object (a list with the ggplot objects `plot` and `table`);
#'   printing it draws both, and [save_figure()] writes it to PNG and PDF.
#' @export
plot.compare_groups <- function(x, break_by = NULL, title = NULL, xlab = "Time",
                                ylab = "Survival probability", legend_title = "Group", ...) {
  d <- x$data
  if (is.null(break_by)) break_by <- diff(pretty(c(0, max(d$time)), n = 6))[1]
  if (!is.numeric(break_by) || length(break_by) != 1L || !is.finite(break_by) || break_by <= 0) {
    stop("plot.compare_groups(): `break_by` must be one positive number", call. = FALSE)
  }
  fit <- survival::survfit(survival::Surv(time, event) ~ group, data = d)
  survminer::ggsurvplot(fit, data = d, conf.int = TRUE, conf.int.alpha = 0.15, censor.shape = 3,
                        censor.size = 2.5,
                        pval = sprintf("Log-rank p = %.3g", x$logrank$p_value), pval.size = 3,
                        legend.labs = levels(d$group), legend.title = legend_title,
                        title = title, xlab = xlab, ylab = ylab, break.time.by = break_by,
                        risk.table = TRUE, risk.table.height = 0.28, risk.table.title = "Number at risk",
                        risk.table.fontsize = 3, risk.table.y.text = FALSE,
                        ggtheme = theme_deepnomo(), tables.theme = theme_deepnomo())
}
