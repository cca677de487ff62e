#' Subgroup analysis of a risk group or score, with interaction tests
#'
#' Within each level of each `by` variable, the hazard ratio of `group` (a
#' two-level factor such as the locked risk groups, second level against the
#' first, or a numeric score, per unit) is estimated by a Cox model
#' \eqn{h(t \mid x) = h_0(t) \exp(\beta x)} fitted to the patients of that
#' level alone, with a Wald 95% CI and p-value. Where the partial likelihood
#' is monotone (a level of `group` without events, or `coxph` not
#' converging or returning an infinite estimate) or the level has fewer than
#' `min_events` events, the estimate comes from Firth's penalized likelihood
#' ([firth_cox()], profile-likelihood CI, Heinze & Schemper 2002) and column
#' `method` says `"firth"`; otherwise `"cox"`. A level with fewer than two
#' events, or where `group` takes one value only, gets `method = "none"` and
#' NA estimates.
#'
#' The interaction p-value of each `by` variable is the likelihood ratio test
#' of \eqn{group \times by} (model `group + by` against `group * by`, both
#' fitted by `coxph` on the patients with both variables known, as
#' `anova(fit0, fit1)`).
#'
#' @param data A cohort table (data frame).
#' @param endpoint Endpoint name: columns `<endpoint>_time` and
#'   `<endpoint>_event` must exist.
#' @param group Column name of the risk group factor (two levels) or a
#'   numeric score.
#' @param by Column names of the subgrouping variables (factor, character,
#'   logical or binary numeric; cut other numeric variables first).
#' @param min_events Levels with fewer events use Firth's penalized Cox.
#' @return An object of class `deepnomo_subgroups`: `$table` (one row per
#'   level plus an `Overall` row: `variable`, `level`, `n`, `events`, `hr`,
#'   `lower`, `upper`, `p_value`, `method`, `p_interaction`), `$group`,
#'   `$endpoint`. Methods: `print()`, `as.data.frame()`, `plot()` (forest
#'   plot, ggplot2).
#' @references Heinze G, Schemper M (2001). A solution to the problem of
#'   monotone likelihood in Cox regression. Biometrics 57:114-119.
#' @examples
#' d <- survival::lung
#' d$status <- d$status - 1
#' d$sex <- factor(d$sex, 1:2, c("male", "female"))
#' d$older <- factor(d$age > 65, c(FALSE, TRUE), c("<=65", ">65"))
#' names(d)[names(d) == "time"] <- "os_time"
#' names(d)[names(d) == "status"] <- "os_event"
#' subgroup_analysis(d, "os", group = "ph.karno", by = c("sex", "older"))
#' @importFrom ggplot2 .data
#' @export
subgroup_analysis <- function(data, endpoint, group, by, min_events = 5) {
  check_endpoint_columns(data, endpoint, "subgroup_analysis")
  check_columns(data, c(group, by), "subgroup_analysis", c("group", rep("by", length(by))))
  if (!is.numeric(min_events) || length(min_events) != 1L || min_events < 0) {
    stop("subgroup_analysis(): `min_events` must be one non-negative number", call. = FALSE)
  }
  g <- as_group(data[[group]], "group", "subgroup_analysis")
  time <- data[[paste0(endpoint, "_time")]]
  event <- data[[paste0(endpoint, "_event")]]
  rows <- list(cbind(variable = "Overall", level = "All patients",
                     group_hr(time, event, g, min_events), p_interaction = NA_real_))
  for (v in by) {
    x <- data[[v]]
    if (is.numeric(x) && length(unique(x[!is.na(x)])) > 2L) {
      stop(sprintf(paste("subgroup_analysis(): `by` column '%s' is numeric with more than two values;",
                         "cut it into a factor first"), v), call. = FALSE)
    }
    x <- droplevels(as.factor(x))
    p_int <- interaction_lrt(time, event, g, x)
    for (lev in levels(x)) {
      keep <- !is.na(x) & x == lev
      rows[[length(rows) + 1L]] <- cbind(variable = v, level = lev,
                                         group_hr(time[keep], event[keep], g[keep], min_events),
                                         p_interaction = p_int)
    }
  }
  tab <- do.call(rbind, rows)
  rownames(tab) <- NULL
  structure(list(table = tab, group = group, endpoint = endpoint,
                 contrast = if (is.factor(g)) paste(rev(levels(g)), collapse = " vs ") else "per unit"),
            class = "deepnomo_subgroups")
}

#' @export
as.data.frame.deepnomo_subgroups <- function(x, ...) x$table

#' @method print deepnomo_subgroups
#' @export
print.deepnomo_subgroups <- function(x, digits = 3, ...) {
  cat(sprintf("Subgroup analysis of %s (%s) for endpoint %s\n", x$group, x$contrast, x$endpoint))
  print_signif(x$table, digits)
  invisible(x)
}

#' @rdname subgroup_analysis
#' @param x A `deepnomo_subgroups` object.
#' @param ... Unused.
#' @export
plot.deepnomo_subgroups <- function(x, ...) {
  forest_plot(x$table, title = sprintf("%s (%s), endpoint %s", x$group, x$contrast, x$endpoint))
}

# --- internals shared by the subgroup, treatment and study analyses ----------

# Prints a table without row names, numeric columns to `digits` significant digits.
print_signif <- function(tab, digits) {
  num <- vapply(tab, is.numeric, TRUE)
  tab[num] <- lapply(tab[num], signif, digits = digits)
  print(tab, row.names = FALSE)
}

# Forest plot of a table with variable, level, n, events, hr, lower, upper,
# method and p_interaction columns.
forest_plot <- function(tab, title = NULL) {
  tab$label <- ifelse(tab$variable == "Overall", tab$level,
                      paste0(tab$variable, ": ", tab$level))
  tab$label <- sprintf("%s (n=%d, events=%d)", tab$label, as.integer(tab$n), as.integer(tab$events))
  first <- !duplicated(tab$variable) & !is.na(tab$p_interaction)
  tab$label[first] <- sprintf("%s  [P int = %s]", tab$label[first], format_p(tab$p_interaction[first]))
  tab$label <- factor(tab$label, levels = rev(unique(tab$label)))
  tab$method <- factor(tab$method, levels = c("cox", "firth", "none"))
  ok <- is.finite(tab$hr)
  ggplot2::ggplot(tab[ok, , drop = FALSE],
                  ggplot2::aes(x = .data$hr, y = .data$label, shape = .data$method)) +
    ggplot2::geom_vline(xintercept = 1, linetype = 2, colour = "grey50") +
    ggplot2::geom_errorbarh(ggplot2::aes(xmin = .data$lower, xmax = .data$upper), height = 0.2) +
    ggplot2::geom_point(size = 2) +
    ggplot2::scale_x_log10() +
    ggplot2::scale_shape_manual(values = c(cox = 15, firth = 17, none = 4), drop = FALSE) +
    ggplot2::labs(x = "Hazard ratio (95% CI, log scale)", y = NULL, shape = "Method", title = title) +
    theme_deepnomo()
}

format_p <- function(p) {
  ifelse(is.na(p), "NA", ifelse(p < 0.001, "<0.001", sprintf("%.3f", p)))
}

check_endpoint_columns <- function(data, endpoint, fun) {
  if (!is.data.frame(data)) stop(sprintf("%s(): `data` must be a data frame", fun), call. = FALSE)
  if (!is.character(endpoint) || length(endpoint) != 1L) {
    stop(sprintf("%s(): `endpoint` must be one endpoint name", fun), call. = FALSE)
  }
  cols <- paste0(endpoint, c("_time", "_event"))
  miss <- setdiff(cols, names(data))
  if (length(miss)) {
    stop(sprintf("%s(): `endpoint` '%s' needs column(s) %s, not in `data`", fun, endpoint,
                 paste(miss, collapse = ", ")), call. = FALSE)
  }
  invisible(cols)
}

check_columns <- function(data, cols, fun, arg) {
  if (!is.character(cols)) stop(sprintf("%s(): `%s` must name columns", fun, arg[1]), call. = FALSE)
  miss <- !cols %in% names(data)
  if (any(miss)) {
    stop(sprintf("%s(): `%s` column(s) not in `data`: %s", fun, arg[min(which(miss)[1], length(arg))],
                 paste(cols[miss], collapse = ", ")), call. = FALSE)
  }
  invisible(cols)
}

# A grouping column: numeric stays numeric, anything else a factor with two
# levels.
as_group <- function(x, arg, fun) {
  if (is.numeric(x) && !is.factor(x)) return(x)
  x <- droplevels(as.factor(x))
  if (nlevels(x) != 2L) {
    stop(sprintf("%s(): `%s` must be numeric or have two levels; it has %d (%s)", fun, arg,
                 nlevels(x), paste(levels(x), collapse = ", ")), call. = FALSE)
  }
  x
}

# Hazard ratio of `x` (numeric, or second level against the first) with a Cox
# model, falling back to Firth's penalized likelihood under monotone
# likelihood or few events. One-row data frame.
group_hr <- function(time, event, x, min_events = 5) {
  ok <- !is.na(time) & !is.na(event) & !is.na(x)
  time <- time[ok]
  event <- event[ok]
  x <- x[ok]
  out <- data.frame(n = length(time), events = sum(event), hr = NA_real_, lower = NA_real_,
                    upper = NA_real_, p_value = NA_real_, method = "none", stringsAsFactors = FALSE)
  if (sum(event) < 2L || length(unique(x)) < 2L) return(out)
  d <- data.frame(time = time, event = event, x = x)
  monotone <- is.factor(x) && any(tapply(event, x, sum) == 0)
  fit <- NULL
  if (!monotone && sum(event) >= min_events) {
    fit <- tryCatch(
      withCallingHandlers(survival::coxph(survival::Surv(time, event) ~ x, data = d),
                          warning = function(w) stop(conditionMessage(w))),
      error = function(e) NULL
    )
    if (!is.null(fit) && (!is.finite(stats::coef(fit)) || !is.finite(sqrt(fit$var[1, 1])))) fit <- NULL
  }
  if (!is.null(fit)) {
    b <- unname(stats::coef(fit))
    se <- sqrt(fit$var[1, 1])
    out[c("hr", "lower", "upper")] <- exp(b + c(0, -1, 1) * stats::qnorm(0.975) * se)
    out$p_value <- 2 * stats::pnorm(-abs(b / se))
    out$method <- "cox"
  } else {
    ft <- as.data.frame(firth_cox(survival::Surv(time, event) ~ x, data = d, pl = TRUE))
    out[c("hr", "lower", "upper")] <- exp(unlist(ft[1L, c("estimate", "lower", "upper")]))
    out$p_value <- ft$p_value[1L]
    out$method <- "firth"
  }
  out
}

# Likelihood ratio test of the x-by-z interaction in a Cox model.
interaction_lrt <- function(time, event, x, z) {
  d <- data.frame(time = time, event = event, x = x, z = z)
  d <- d[stats::complete.cases(d), , drop = FALSE]
  d$z <- droplevels(d$z)
  if (nlevels(d$z) < 2L || sum(d$event) == 0L) return(NA_real_)
  fits <- tryCatch(suppressWarnings(list(
    survival::coxph(survival::Surv(time, event) ~ x + z, data = d),
    survival::coxph(survival::Surv(time, event) ~ x * z, data = d)
  )), error = function(e) NULL)
  if (is.null(fits)) return(NA_real_)
  a <- stats::anova(fits[[1]], fits[[2]])
  unname(a[["Pr(>|Chi|)"]][2])
}
