# Nomograms of Cox models: drawing with rms::nomogram, scoring patients on the
# points scale, and a plain description of the scale for other software.

#' Nomogram of a Cox model
#'
#' Builds an [rms::nomogram()] for a `cph` fit with one survival-probability
#' axis per time (`fun = rms::Survival(fit)(t, lp)`), and records the linear
#' mapping behind each axis so that patients can be scored exactly.
#'
#' For predictor \eqn{j} with coefficient(s) \eqn{\beta_j} the nomogram draws
#' points \eqn{P_j = s (\beta_j x_j - m_j)}, where \eqn{s} is the scale that
#' gives the widest predictor `maxscale` points and \eqn{m_j} the smallest
#' contribution on that predictor's axis. So a numeric predictor has
#' \eqn{P_j = a_j + b_j x} with \eqn{b_j = s \beta_j}, \eqn{a_j = -s m_j}, a
#' factor has one value per level, and the total points \eqn{T = \sum P_j}
#' give the (centred) linear predictor \eqn{lp = T / s + \sum_j m_j - c}
#' (\eqn{c} = `fit$center`), and survival \eqn{S(t) = S_0(t)^{\exp(lp)}} with
#' \eqn{S_0(t)} = `rms::Survival(fit)(t, 0)` (the step-function Breslow-type
#' estimate stored by `cph(surv = TRUE)`). Only linear numeric terms and
#' factors (no splines, transformations or interactions) are supported. The
#' axes and the drawing are `rms`'s; reading the mappings off them, scoring
#' and the plain description ([nomogram_spec()]) are written here.
#'
#' @param fit An [rms::cph()] fit with `x = TRUE, y = TRUE, surv = TRUE` and
#'   stored variable limits (fit while a `datadist` was set), or a
#'   `cox_selection` from [select_cox()].
#' @param times Times (endpoint units, months) of the survival axes.
#' @param maxscale Points of the widest predictor axis.
#' @param fun_at Survival probabilities marked on the survival axes.
#' @return An object of class `deepnomo_nomogram`: `nomogram` (the rms
#'   object), `fit`, `times`, `scale` (\eqn{s}), `offset`
#'   (\eqn{\sum m_j - c}), `predictors` (list of mappings), `baseline_surv`
#'   (\eqn{S_0} at `times`), `maxscale`.
#' @references Iasonos A, Schrag D, Raj GV, Panageas KS (2008). How to build
#'   and interpret a nomogram for cancer prognosis. J Clin Oncol 26:1364-1370.
#' @seealso [nomogram_score()], [nomogram_spec()]
#' @examples
#' d <- na.omit(survival::pbc[, c("time", "status", "age", "bili", "albumin")])
#' d$os_time <- d$time / 30.44; d$os_event <- as.integer(d$status == 2)
#' sel <- select_cox(d, "os", c("age", "bili", "albumin"))
#' nom <- build_nomogram(sel, times = c(36, 60))
#' nomogram_score(nom, d[1:3, ])
#' @export
build_nomogram <- function(fit, times = c(36, 60), maxscale = 100,
                           fun_at = c(0.95, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1)) {
  fit <- as_cph(fit, "build_nomogram")
  if (!is.numeric(times) || !length(times) || anyNA(times) || any(times <= 0)) {
    stop("build_nomogram(): `times` must be positive numbers", call. = FALSE)
  }
  if (any(times > max(fit$time))) {
    stop(sprintf("build_nomogram(): `times` %s beyond the last follow-up time of the fit (%.1f)",
                 paste(times[times > max(fit$time)], collapse = ", "), max(fit$time)),
         call. = FALSE)
  }
  des <- fit$Design
  labels <- attr(stats::terms(fit), "term.labels")
  bad <- which(!des$assume %in% c("asis", "category") | labels != des$name)
  if (length(bad)) {
    stop(sprintf(paste0("build_nomogram(): term(s) %s are not plain linear numeric or factor ",
                        "terms; refit with untransformed variables"),
                 paste(labels[bad], collapse = ", ")), call. = FALSE)
  }
  if (is.null(des$limits) || !length(des$limits)) {
    stop("build_nomogram(): `fit` has no stored variable limits; fit it while ",
         "options(datadist = rms::datadist(data)) is set (select_cox() does this)", call. = FALSE)
  }
  surv_fun <- rms::Survival(fit)
  funs <- lapply(times, function(t) {
    force(t)
    function(lp) surv_fun(t, lp)
  })
  nom <- rms::nomogram(fit, fun = funs, funlabel = sprintf("%g-month survival", times),
                       fun.at = fun_at, lp = FALSE, maxscale = maxscale)
  sc <- attr(nom, "info")$sc
  b <- stats::coef(fit)
  predictors <- list()
  m <- 0
  for (j in seq_along(des$name)) {
    v <- des$name[j]
    axis <- nom[[v]]
    mj <- unname(axis$Xbeta[1] - axis$points[1] / sc)
    m <- m + mj
    if (des$assume[j] == "asis") {
      predictors[[v]] <- list(name = v, type = "numeric", a = -sc * mj, b = sc * unname(b[v]),
                              range = range(axis[[v]]))
    } else {
      predictors[[v]] <- list(name = v, type = "factor", levels = as.character(axis[[v]]),
                              points = unname(axis$points))
    }
  }
  structure(list(nomogram = nom, fit = fit, times = times, scale = sc,
                 offset = m - unname(fit$center), predictors = predictors,
                 baseline_surv = vapply(times, function(t) surv_fun(t, 0), numeric(1)),
                 maxscale = maxscale),
            class = "deepnomo_nomogram")
}

#' The cph inside a fit argument, checked
#' @noRd
as_cph <- function(fit, call_name) {
  if (inherits(fit, "cox_selection")) fit <- fit$fit
  if (!inherits(fit, "cph")) {
    stop(sprintf("%s(): `fit` must be an rms::cph fit or a cox_selection, not %s", call_name,
                 class(fit)[1]), call. = FALSE)
  }
  if (is.null(fit$x) || is.null(fit$y) || !length(fit$surv)) {
    stop(sprintf("%s(): `fit` must be fit with x = TRUE, y = TRUE, surv = TRUE", call_name),
         call. = FALSE)
  }
  fit
}

#' Score patients on a nomogram
#'
#' Points per predictor from the nomogram's linear mappings (see
#' [build_nomogram()]), total points, and predicted survival
#' \eqn{S_0(t)^{\exp(lp)}} at each time of the nomogram. With
#' `round_points = FALSE` the survival equals `rms::survest()` on the model;
#' with `TRUE` each predictor's points are rounded to integers as when read
#' off the printed nomogram.
#'
#' @param nomogram A `deepnomo_nomogram`.
#' @param newdata Data frame with the model's predictors (no missing values;
#'   factor values must be levels of the model).
#' @param round_points Round each predictor's points to whole numbers.
#' @return A data frame: one `points_<predictor>` column per predictor,
#'   `total_points`, `lp` (centred linear predictor), and `surv_<time>` per
#'   time (e.g. `surv_36`).
#' @export
nomogram_score <- function(nomogram, newdata, round_points = FALSE) {
  if (!inherits(nomogram, "deepnomo_nomogram")) {
    stop("nomogram_score(): `nomogram` must come from build_nomogram()", call. = FALSE)
  }
  if (!is.data.frame(newdata)) {
    stop("nomogram_score(): `newdata` must be a data frame", call. = FALSE)
  }
  if (nrow(newdata) == 0L) stop("nomogram_score(): `newdata` has no rows", call. = FALSE)
  out <- data.frame(row.names = seq_len(nrow(newdata)))
  for (p in nomogram$predictors) {
    if (!p$name %in% names(newdata)) {
      stop(sprintf("nomogram_score(): `newdata` lacks predictor column `%s`", p$name),
           call. = FALSE)
    }
    x <- newdata[[p$name]]
    if (anyNA(x)) {
      stop(sprintf("nomogram_score(): column `%s` of `newdata` has missing values (rows %s)",
                   p$name, paste(utils::head(which(is.na(x)), 5), collapse = ", ")),
           call. = FALSE)
    }
    if (p$type == "numeric") {
      if (!is.numeric(x)) {
        stop(sprintf("nomogram_score(): column `%s` must be numeric", p$name), call. = FALSE)
      }
      outside <- x < p$range[1] | x > p$range[2]
      if (any(outside)) {
        warning(sprintf(paste0("nomogram_score(): %d value(s) of `%s` outside the nomogram ",
                               "axis [%g, %g]; points extrapolated"),
                        sum(outside), p$name, p$range[1], p$range[2]), call. = FALSE)
      }
      pts <- p$a + p$b * x
    } else {
      x <- as.character(x)
      unknown <- setdiff(unique(x), p$levels)
      if (length(unknown)) {
        stop(sprintf("nomogram_score(): column `%s` has level(s) %s not in the model (levels %s)",
                     p$name, paste(unknown, collapse = ", "), paste(p$levels, collapse = ", ")),
             call. = FALSE)
      }
      pts <- p$points[match(x, p$levels)]
    }
    out[[paste0("points_", p$name)]] <- if (round_points) round(pts) else pts
  }
  out$total_points <- unname(rowSums(out))
  out$lp <- out$total_points / nomogram$scale + nomogram$offset
  for (i in seq_along(nomogram$times)) {
    out[[paste0("surv_", format(nomogram$times[i]))]] <- nomogram$baseline_surv[i]^exp(out$lp)
  }
  out
}

#' Plain description of a nomogram for other software
#'
#' Everything needed to recompute a patient's score without R (for example in
#' a web page): per predictor the points mapping (numeric: `points = a + b * x`
#' with the axis `range`; factor: `points` per level), the total points to
#' linear predictor mapping `lp = intercept + slope * total_points`, and the
#' baseline survival `s0` at each time, with `survival = s0 ^ exp(lp)`.
#'
#' @param nomogram A `deepnomo_nomogram`.
#' @param file Optional path of a JSON file to write (atomically).
#' @return A list (invisibly when `file` is given) that
#'   `jsonlite::toJSON(auto_unbox = TRUE, digits = NA)` writes losslessly.
#' @export
nomogram_spec <- function(nomogram, file = NULL) {
  if (!inherits(nomogram, "deepnomo_nomogram")) {
    stop("nomogram_spec(): `nomogram` must come from build_nomogram()", call. = FALSE)
  }
  spec <- list(
    model = "cox",
    formula = "survival(t) = s0(t) ^ exp(lp); lp = intercept + slope * total_points",
    maxscale = nomogram$maxscale,
    predictors = unname(lapply(nomogram$predictors, function(p) p)),
    total_points_to_lp = list(intercept = nomogram$offset, slope = 1 / nomogram$scale),
    baseline_survival = list(times = nomogram$times, s0 = nomogram$baseline_surv)
  )
  if (is.null(file)) return(spec)
  json <- jsonlite::toJSON(spec, auto_unbox = TRUE, digits = NA, pretty = TRUE)
  tmp <- paste0(file, ".tmp")
  writeLines(json, tmp)
  if (!file.rename(tmp, file)) stop("nomogram_spec(): could not write ", file, call. = FALSE)
  invisible(spec)
}

#' @export
print.deepnomo_nomogram <- function(x, ...) {
  cat(sprintf("Nomogram: %d predictor(s), survival at %s; %g points for the widest axis\n",
              length(x$predictors), paste(x$times, collapse = ", "), x$maxscale))
  for (p in x$predictors) {
    if (p$type == "numeric") {
      cat(sprintf("  %-12s points = %.4g + %.4g * x   (x in [%g, %g])\n", p$name, p$a, p$b,
                  p$range[1], p$range[2]))
    } else {
      cat(sprintf("  %-12s %s\n", p$name,
                  paste(sprintf("%s: %.1f", p$levels, p$points), collapse = ", ")))
    }
  }
  cat(sprintf("  lp = %.4g + total_points / %.4g;  S0(t) = %s\n", x$offset, x$scale,
              paste(sprintf("%.4f", x$baseline_surv), collapse = ", ")))
  invisible(x)
}

#' @export
plot.deepnomo_nomogram <- function(x, ...) {
  graphics::plot(x$nomogram, ...)
  invisible(x)
}
