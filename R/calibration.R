# Calibration of survival predictions at one time: grouped observed (Kaplan-
# Meier) versus predicted survival, the D'Agostino-Nam chi-square, and the
# bootstrap overfitting-corrected curve of rms::calibrate.

#' Calibration of a Cox model at a time point
#'
#' Patients are split into `groups` groups at the quantiles of their
#' predicted failure probability \eqn{\hat p_i = 1 - \hat S(t \mid x_i)}
#' (`cut()` at `quantile(type = 7)` breaks, duplicate breaks merged, so fewer
#' groups can result). In group \eqn{g} with \eqn{n_g} patients,
#' \eqn{\bar p_g} is the mean predicted failure probability and
#' \eqn{KM_g} the Kaplan-Meier failure probability \eqn{1 - \hat S_{KM}(t)}.
#' The D'Agostino-Nam (2003) Hosmer-Lemeshow-type statistic for censored data
#' is
#' \deqn{\chi^2 = \sum_g \frac{n_g (KM_g - \bar p_g)^2}{\bar p_g (1 - \bar p_g)}}{
#' chi2 = sum_g n_g (KM_g - p_g)^2 / (p_g (1 - p_g))}
#' on \eqn{G - 1} degrees of freedom (\eqn{G} groups with a defined
#' Kaplan-Meier estimate at `time`; groups whose follow-up ends, censored,
#' before `time` are reported with `observed = NA`, left out of the sum, and a warning is
#' given). This statistic is computed here; the Kaplan-Meier estimates and
#' their log-scale confidence limits come from [survival::survfit()], the
#' predictions from `rms::Survival(fit)(time, lp)` (equal to `rms::survest()`).
#'
#' When `data` is the data the model was fit on (same response), and `B > 0`,
#' the bootstrap overfitting-corrected calibration of [rms::calibrate()]
#' (`cmethod = "KM"`, `u = time`, `m` = patients per group, `B` resamples) is
#' added; the model is refit with `time.inc = time` for it when needed. The
#' warnings `rms::calibrate` gives for resamples in which a risk interval has
#' fewer than 2 patients, or whose Cox fit did not converge, are counted and
#' reported in one message.
#'
#' @param fit An [rms::cph()] fit (`x = TRUE, y = TRUE, surv = TRUE`) or a
#'   `cox_selection`.
#' @param data Data frame with the model's predictors and response columns
#'   (training or a test cohort).
#' @param time Time point (endpoint units).
#' @param groups Number of risk groups (deciles by default).
#' @param B Bootstrap resamples for `rms::calibrate()`; 0 skips it.
#' @param bootstrap `NULL` (automatic: only when `data` is the training data),
#'   `TRUE` or `FALSE`.
#' @param seed Seed of the bootstrap (the caller's random state is restored).
#' @return An object of class `calibration_test`: `groups` (data frame
#'   `group`, `n`, `events` (events by `time`), `predicted` (mean predicted
#'   survival), `observed` (Kaplan-Meier survival), `lower`, `upper`), `test`
#'   (list `chi2`, `df`, `p_value`), `time`, `bootstrap` (data frame
#'   `predicted`, `observed`, `corrected` from `rms::calibrate`, or `NULL`).
#' @references D'Agostino RB, Nam BH (2003). Evaluation of the performance of
#'   survival analysis models: discrimination and calibration measures.
#'   Handbook of Statistics 23:1-25.
#' @examples
#' d <- na.omit(survival::pbc[, c("time", "status", "age", "bili", "albumin")])
#' d$os_time <- d$time / 30.44; d$os_event <- as.integer(d$status == 2)
#' sel <- select_cox(d, "os", c("age", "bili", "albumin"))
#' cal <- calibration_test(sel, sel$data, time = 60, groups = 5, B = 20)
#' cal$test
#' @export
calibration_test <- function(fit, data, time, groups = 10, B = 200, bootstrap = NULL, seed = 1) {
  cn <- "calibration_test"
  fit <- as_cph(fit, cn)
  if (!is.data.frame(data) || nrow(data) == 0L) {
    stop("calibration_test(): `data` must be a non-empty data frame", call. = FALSE)
  }
  if (!is.numeric(time) || length(time) != 1L || !is.finite(time) || time <= 0) {
    stop("calibration_test(): `time` must be one positive number", call. = FALSE)
  }
  if (time > max(fit$time)) {
    stop(sprintf("calibration_test(): `time` = %g is beyond the fit's last time (%.1f)", time,
                 max(fit$time)), call. = FALSE)
  }
  if (!is.numeric(groups) || length(groups) != 1L || groups < 2) {
    stop("calibration_test(): `groups` must be one number >= 2", call. = FALSE)
  }
  resp <- response_columns(fit)
  needed <- c(resp, fit$Design$name)
  miss <- setdiff(needed, names(data))
  if (length(miss)) {
    stop("calibration_test(): `data` lacks column(s) ", paste(miss, collapse = ", "),
         call. = FALSE)
  }
  data <- complete_rows(data, needed, cn)
  tm <- data[[resp[1]]]
  ev <- data[[resp[2]]]
  lp <- stats::predict(fit, newdata = data, type = "lp")
  pred <- as.numeric(rms::Survival(fit)(time, lp))
  risk <- 1 - pred
  breaks <- unique(stats::quantile(risk, seq(0, 1, length.out = groups + 1)))
  if (length(breaks) - 1L < groups) {
    message(sprintf("calibration_test(): tied predictions give %d groups instead of %d",
                    length(breaks) - 1L, groups))
  }
  grp <- if (length(breaks) < 2L) factor(rep(1L, length(risk))) else
    cut(risk, breaks, include.lowest = TRUE, labels = FALSE)
  rows <- lapply(sort(unique(grp)), function(g) {
    i <- grp == g
    km <- survival::survfit(survival::Surv(tm[i], ev[i]) ~ 1)
    # defined when follow-up reaches `time` or the estimate has dropped to 0
    defined <- max(tm[i]) >= time || min(km$surv) == 0
    s <- summary(km, times = if (defined) time else max(tm[i]), extend = TRUE)
    data.frame(group = as.integer(g), n = sum(i), events = sum(ev[i] == 1 & tm[i] <= time),
               predicted = mean(pred[i]),
               observed = if (defined) s$surv else NA_real_,
               lower = if (defined) s$lower else NA_real_,
               upper = if (defined) s$upper else NA_real_)
  })
  tab <- do.call(rbind, rows)
  ok <- !is.na(tab$observed)
  if (any(!ok)) {
    warning(sprintf("calibration_test(): follow-up ends before time %g in group(s) %s; left out",
                    time, paste(tab$group[!ok], collapse = ", ")), call. = FALSE)
  }
  p_fail <- 1 - tab$predicted[ok]
  km_fail <- 1 - tab$observed[ok]
  chi2 <- sum(tab$n[ok] * (km_fail - p_fail)^2 / (p_fail * (1 - p_fail)))
  df <- sum(ok) - 1L
  test <- list(chi2 = chi2, df = df, p_value = stats::pchisq(chi2, df, lower.tail = FALSE))

  if (is.null(bootstrap)) {
    bootstrap <- nrow(data) == nrow(fit$y) &&
      isTRUE(all.equal(unname(cbind(tm, ev)), unname(unclass(fit$y)[, 1:2]),
                       check.attributes = FALSE))
  }
  boot <- NULL
  if (isTRUE(bootstrap) && B > 0) boot <- calibrate_bootstrap(fit, data, time, groups, B, seed)
  structure(list(groups = tab, test = test, time = time, bootstrap = boot),
            class = "calibration_test")
}

#' Names of the time and event columns of a cph formula
#' @noRd
response_columns <- function(fit) {
  lhs <- stats::formula(fit)[[2]]
  args <- as.list(lhs)[-1]
  if (length(args) != 2L || !all(vapply(args, is.name, logical(1)))) {
    stop("`fit` must have a response Surv(time, event) of two plain columns", call. = FALSE)
  }
  vapply(args, as.character, character(1))
}

#' rms::calibrate with cmethod "KM" at u = time, seeded
#' @noRd
calibrate_bootstrap <- function(fit, data, time, groups, B, seed) {
  if (abs(fit$time.inc - time) > 1e-8) {
    fit <- stats::update(fit, data = data, time.inc = time, x = TRUE, y = TRUE, surv = TRUE)
  }
  counts <- c(sparse = 0L, convergence = 0L)
  utils::capture.output(
    cal <- withCallingHandlers(
      with_seed(seed, rms::calibrate(fit, u = time, cmethod = "KM",
                                     m = floor(nrow(data) / groups), B = B)),
      warning = function(w) {
        msg <- conditionMessage(w)
        kind <- if (grepl("interval had < 2 observations", msg)) "sparse" else
          if (grepl("did not converge|may be infinite", msg)) "convergence" else NA
        if (!is.na(kind)) {
          counts[[kind]] <<- counts[[kind]] + 1L
          invokeRestart("muffleWarning")
        }
      })
  )
  if (any(counts > 0L)) {
    message(sprintf(paste0("calibration_test(): over %d rms::calibrate resamples: %d risk ",
                           "interval(s) with < 2 observations, %d resample fit(s) with ",
                           "convergence warnings"), B, counts[["sparse"]],
                    counts[["convergence"]]))
  }
  data.frame(predicted = unname(cal[, "mean.predicted"]), observed = unname(cal[, "KM"]),
             corrected = unname(cal[, "KM.corrected"]))
}

#' @export
as.data.frame.calibration_test <- function(x, ...) x$groups

#' @export
print.calibration_test <- function(x, ...) {
  cat(sprintf("Calibration at time %g: %d groups\n", x$time, nrow(x$groups)))
  print(x$groups, row.names = FALSE, digits = 3)
  cat(sprintf("D'Agostino-Nam chi-square = %.3f on %d df, p = %.4g\n", x$test$chi2, x$test$df,
              x$test$p_value))
  if (!is.null(x$bootstrap)) cat("Bootstrap-corrected curve (rms::calibrate) included\n")
  invisible(x)
}

#' @export
plot.calibration_test <- function(x, ...) {
  g <- x$groups
  p <- ggplot2::ggplot() +
    ggplot2::geom_abline(slope = 1, intercept = 0, linetype = "dashed", colour = "grey50") +
    ggplot2::geom_errorbar(data = g, ggplot2::aes(x = .data$predicted, ymin = .data$lower,
                                                  ymax = .data$upper), width = 0.015,
                           colour = "grey30", na.rm = TRUE) +
    ggplot2::geom_point(data = g, ggplot2::aes(x = .data$predicted, y = .data$observed,
                                               shape = "Observed (KM)"), na.rm = TRUE) +
    ggplot2::geom_line(data = g, ggplot2::aes(x = .data$predicted, y = .data$observed),
                       colour = "grey30", na.rm = TRUE)
  if (!is.null(x$bootstrap)) {
    p <- p + ggplot2::geom_line(data = x$bootstrap,
                                ggplot2::aes(x = .data$predicted, y = .data$corrected,
                                             colour = "Bootstrap corrected"), na.rm = TRUE) +
      ggplot2::geom_point(data = x$bootstrap,
                          ggplot2::aes(x = .data$predicted, y = .data$corrected,
                                       colour = "Bootstrap corrected"), shape = 4, na.rm = TRUE)
  }
  p + ggplot2::scale_colour_manual(values = c("Bootstrap corrected" = "#B2182B"), name = NULL) +
    ggplot2::scale_shape_manual(values = c("Observed (KM)" = 16), name = NULL) +
    ggplot2::coord_equal(xlim = c(0, 1), ylim = c(0, 1)) +
    ggplot2::labs(x = sprintf("Predicted %g-month survival", x$time),
                  y = sprintf("Observed %g-month survival", x$time),
                  subtitle = sprintf("D'Agostino-Nam\nchi2 = %.2f, df = %d, p = %.3f",
                                     x$test$chi2, x$test$df, x$test$p_value)) +
    theme_deepnomo()
}
