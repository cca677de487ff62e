# Firth-penalised Cox regression (Heinze & Schemper 2001).

#' Firth-penalised Cox regression with profile penalised likelihood inference
#'
#' Fits a Cox proportional hazards model by maximising Firth's penalised
#' partial likelihood, which gives finite estimates under monotone likelihood
#' (a covariate, or a combination, that perfectly orders the events: the
#' subgroups with few or no events where [survival::coxph()] diverges).
#'
#' **Model.** With Breslow's handling of ties, the log partial likelihood is
#' \deqn{\ell(\beta) = \sum_i \delta_i x_i^\top\beta - \sum_m d_m \log S_0(t_m),
#'   \quad S_r(t) = \sum_{j: t_j \ge t} e^{x_j^\top\beta} x_j^{\otimes r},}
#' where \eqn{t_m} are the distinct event times with \eqn{d_m} events.
#' Firth's (1993) penalty adds half the log determinant of the information,
#' \deqn{\ell^*(\beta) = \ell(\beta) + \tfrac12 \log |I(\beta)|,}
#' whose score is \eqn{U^*_j = U_j + \tfrac12 \mathrm{tr}\{I^{-1}\partial I/\partial\beta_j\}}
#' (Heinze & Schemper 2001). Neither the second- nor the third-order risk-set
#' sums are formed: only \eqn{S_0} and \eqn{S_1} are cumulated over time-sorted
#' rows; every term with \eqn{x x^\top} or \eqn{x x x} is rewritten as a sum over
#' patients of \eqn{e^{\eta_i}} times the event-time weights accumulated over the
#' risk sets the patient belongs to (with \eqn{q_i = x_i^\top I^{-1} x_i} for the trace),
#' so one evaluation costs \eqn{O(np^2)}.
#'
#' **Algorithm.** As coxphf 1.13.4: covariates are divided by their standard
#' deviations; Newton-Raphson steps \eqn{I^{-1}U^*} from \eqn{\beta = 0}, each
#' component capped at `maxstep`, halved (at most `maxhs` + 1 times) while the
#' penalised log-likelihood does not increase (a change within rounding error
#' of the sum, \eqn{10^{-13}|\ell^*|}, is not taken as a decrease, so restricted
#' fits may use one or two iterations fewer than coxphf; estimates agree to
#' about \eqn{10^{-7}} relative); convergence when every
#' standardised change is at most `epsilon` and every penalised score is at most
#' `gconv`. The covariance is \eqn{I(\hat\beta)^{-1}} (unpenalised information).
#' `loglik` is reported on that standardised scale, as coxphf does (it differs
#' from the unscaled penalised log-likelihood by \eqn{\sum_j \log s_j}).
#'
#' **Inference.** With `pl = TRUE`, confidence limits are where the profile
#' penalised log-likelihood drops by \eqn{\chi^2_{1,1-\alpha}/2}, found with the
#' Venzon & Moolgavkar (1988) iteration, and p-values come from the penalised
#' likelihood ratio \eqn{2\{\ell^*(\hat\beta) - \ell^*(\hat\beta_{(-j)}, \beta_j = 0)\}}
#' (the restricted fit keeps \eqn{\beta_j} in the penalty). With `pl = FALSE`
#' both are Wald: \eqn{\hat\beta \pm z_{1-\alpha/2}\,se} and \eqn{(\hat\beta/se)^2}.
#' A limit or p-value whose iteration reaches `maxit` is `NA` with a warning.
#' Two deliberate departures from coxphf, both outside its well-defined range:
#' p-values are upper-tail \eqn{\chi^2_1} probabilities, so those below
#' \eqn{10^{-16}} are not rounded to 0 as `1 - pchisq()` does; and a negative
#' value under the square root of the Venzon-Moolgavkar Lagrange multiplier is
#' taken as 0 instead of giving `NaN`.
#'
#' @param formula `Surv(time, event) ~ terms`; factors and interactions are
#'   expanded by [stats::model.matrix()].
#' @param data Data frame holding the variables of `formula`.
#' @param pl Profile penalised likelihood confidence intervals and penalised
#'   likelihood-ratio p-values (`TRUE`) or Wald (`FALSE`).
#' @param alpha Significance level; intervals have coverage `1 - alpha`.
#' @param maxit Maximum Newton-Raphson (and profile) iterations.
#' @param maxhs Maximum step halvings per iteration.
#' @param epsilon Convergence bound on the change of standardised coefficients
#'   (also the tolerance of the profile likelihood search).
#' @param gconv Convergence bound on the absolute penalised score.
#' @param maxstep Largest change of a standardised coefficient in one step.
#' @param na_action `"omit"` (drop incomplete rows with a message) or `"fail"`.
#' @return An object of class `firth_cox`: `coefficients` (log hazard ratios),
#'   `var`, `se`, `ci` (matrix of limits on the log hazard-ratio scale),
#'   `p_value`, `loglik` (penalised, `c(null = , fitted = )`), `iter`,
#'   `iter_ci`, `method_ci`, `alpha`, `n`, `n_events`, `call`. Methods:
#'   `print`, `summary`, `coef`, `vcov`, `as.data.frame` (columns `term`,
#'   `estimate`, `se`, `lower`, `upper` on the log hazard-ratio scale,
#'   `p_value`, and `hr`, `hr_lower`, `hr_upper` on the hazard-ratio scale,
#'   which is the scale of coxphf's `ci.lower`/`ci.upper`).
#' @references
#' Firth D (1993). Bias reduction of maximum likelihood estimates.
#' *Biometrika* 80:27-38.
#'
#' Heinze G, Schemper M (2001). A solution to the problem of monotone
#' likelihood in Cox regression. *Biometrics* 57:114-119.
#'
#' Venzon DJ, Moolgavkar SH (1988). A method for computing
#' profile-likelihood-based confidence intervals. *Applied Statistics*
#' 37:87-94.
#' @examples
#' library(survival)
#' d <- data.frame(time = c(1, 2, 3, 4, 5, 6), event = c(1, 1, 1, 0, 1, 0),
#'                 x = c(1, 1, 1, 0, 1, 0))
#' fit <- firth_cox(Surv(time, event) ~ x, data = d)
#' as.data.frame(fit)
#' @export
firth_cox <- function(formula, data, pl = TRUE, alpha = 0.05, maxit = 50, maxhs = 5,
                      epsilon = 1e-6, gconv = 1e-4, maxstep = 0.5,
                      na_action = c("omit", "fail")) {
  na_action <- match.arg(na_action)
  stop_arg <- function(arg, msg) stop(sprintf("firth_cox(): `%s` %s", arg, msg), call. = FALSE)
  if (!inherits(formula, "formula") || length(formula) != 3L)
    stop_arg("formula", "must be a two-sided formula `Surv(time, event) ~ terms`")
  if (!is.data.frame(data)) stop_arg("data", "must be a data frame")
  if (!is.logical(pl) || length(pl) != 1L || is.na(pl)) stop_arg("pl", "must be TRUE or FALSE")
  if (!is.numeric(alpha) || length(alpha) != 1L || !(alpha > 0 && alpha < 1))
    stop_arg("alpha", "must be a number in (0, 1)")
  for (nm in c("maxit", "maxhs", "epsilon", "gconv", "maxstep")) {
    v <- get(nm)
    if (!is.numeric(v) || length(v) != 1L || is.na(v) || v <= 0) stop_arg(nm, "must be a positive number")
  }
  env <- environment(formula)
  if (is.null(env)) env <- parent.frame()
  if (!exists("Surv", envir = env, mode = "function")) {
    # let `Surv(time, event) ~ ...` work without survival attached
    env <- list2env(list(Surv = survival::Surv), parent = env)
    environment(formula) <- env
  }
  mf <- stats::model.frame(formula, data, na.action = stats::na.pass)
  y <- stats::model.response(mf)
  if (!inherits(y, "Surv") || attr(y, "type") != "right")
    stop_arg("formula", "must have a right-censored `Surv(time, event)` response")
  tt <- stats::delete.response(stats::terms(mf))
  x <- stats::model.matrix(tt, mf)
  x <- x[, colnames(x) != "(Intercept)", drop = FALSE]
  if (ncol(x) == 0L) stop_arg("formula", "has no covariates")
  time <- as.numeric(y[, 1])
  time[!stats::complete.cases(x)] <- NA
  chk <- check_surv_input(time, as.numeric(y[, 2]), na_action = na_action, call_name = "firth_cox")
  x <- x[chk$keep, , drop = FALSE]
  sds <- apply(x, 2, stats::sd)
  if (any(!(sds > 0)))
    stop_arg("formula", sprintf("term(s) %s constant in the data",
                                paste(colnames(x)[!(sds > 0)], collapse = ", ")))

  qx <- qr(x)
  if (qx$rank < ncol(x))
    stop_arg("formula", sprintf("term(s) %s linearly dependent on the others",
                                paste(colnames(x)[qx$pivot[(qx$rank + 1L):ncol(x)]], collapse = ", ")))
  ctx <- firth_context(sweep(x, 2, sds, "/"), chk$time, chk$event)
  p <- ncol(x)
  fit <- firth_newton(ctx, free = rep(TRUE, p), start = rep(0, p), maxit, maxhs, epsilon, gconv, maxstep)
  if (fit$iter >= maxit) warning("firth_cox(): no convergence in ", maxit, " iterations", call. = FALSE)
  vm <- solve(fit$cur$info)
  b <- fit$b
  coef <- b / sds
  vc <- vm / outer(sds, sds)
  se <- sqrt(diag(vc))
  terms_ <- colnames(x)
  iter_ci <- NULL
  if (pl) {
    prof <- firth_profile(ctx, fit$cur, b, alpha, maxit, maxhs, epsilon, gconv, maxstep)
    ci <- prof$ci / sds
    pval <- stats::pchisq(prof$chisq, 1, lower.tail = FALSE)
    iter_ci <- prof$iter
    ci[prof$iter[, 1] >= maxit, 1] <- NA
    ci[prof$iter[, 2] >= maxit, 2] <- NA
    pval[prof$iter[, 3] >= maxit] <- NA
    if (any(prof$iter >= maxit))
      warning("firth_cox(): profile likelihood search did not converge for some terms (NA)", call. = FALSE)
    dimnames(iter_ci) <- list(terms_, c("lower", "upper", "p_value"))
  } else {
    z <- stats::qnorm(1 - alpha / 2)
    ci <- cbind(coef - z * se, coef + z * se)
    pval <- stats::pchisq(coef^2 / se^2, 1, lower.tail = FALSE)
  }
  names(coef) <- names(se) <- names(pval) <- terms_
  dimnames(vc) <- list(terms_, terms_)
  dimnames(ci) <- list(terms_, c("lower", "upper"))
  structure(list(coefficients = coef, var = vc, se = se, ci = ci, p_value = pval,
                 loglik = c(null = fit$loglik_null, fitted = fit$cur$loglik),
                 iter = fit$iter, iter_ci = iter_ci, alpha = alpha,
                 method_ci = if (pl) "profile penalised likelihood" else "Wald",
                 n = length(chk$time), n_events = sum(chk$event), call = match.call()),
            class = "firth_cox")
}

# Sorted data and risk-set bookkeeping shared by every likelihood evaluation.
firth_context <- function(x, time, event) {
  o <- order(time, decreasing = TRUE)
  x <- x[o, , drop = FALSE]
  time <- time[o]
  event <- event[o]
  n <- length(time)
  # Rows sorted by decreasing time: the risk set of time t is every row up to
  # the last row of t's tie block, so its sums are cumulative sums there.
  block_end <- which(c(time[-1L] != time[-n], TRUE))
  block <- rep.int(seq_along(block_end), diff(c(0L, block_end)))
  d <- rowsum(event, block, reorder = TRUE)[, 1]
  ev_end <- block_end[d > 0]
  # Rows after the last event block (censored before the first event time)
  # are in no risk set. Every other row belongs to segment k, the rows up to
  # the k-th event-block end: it is at risk at event times k, k + 1, ...
  keep <- seq_len(ev_end[length(ev_end)])
  x <- x[keep, , drop = FALSE]
  list(x = x, x1 = cbind(1, x), event = event[keep], ev_end = ev_end,
       seg = rep.int(seq_along(ev_end), diff(c(0L, ev_end))), d = d[d > 0],
       xdelta = colSums(x * event[keep]), p = ncol(x))
}

# Cumulative column sums of `m` (rows in decreasing time) kept at rows `at`:
# risk-set sums at each event time.
risk_sums <- function(m, at) {
  out <- matrix(0, length(at), ncol(m))
  for (k in seq_len(ncol(m))) out[, k] <- cumsum(m[, k])[at]
  out
}

# Sums over event times m >= k, for each k (rows of a matrix, or a vector):
# what a row of segment k accumulates over the risk sets it belongs to.
tail_sums <- function(a) {
  if (is.matrix(a)) {
    for (k in seq_len(ncol(a))) a[, k] <- tail_sums(a[, k])
    return(a)
  }
  cs <- cumsum(a)
  cs[length(cs)] - cs + a
}

# Penalised log-likelihood, penalised score and (unpenalised) information at b.
#
# With A_i = sum over the event times m whose risk set holds row i of d_m / S0_m,
# I = sum_i w_i A_i x_i x_i' - sum_m d_m S1_m S1_m' / S0_m^2, and the Firth
# trace tr(I^-1 dI/db_j) = sum_m d_m [R1_mj / S0 - R0_m S1_mj / S0^2
# - 2 (S2_m v_m)_j / S0^2 + 2 (S1_m' v_m) S1_mj / S0^3], v_m = I^-1 S1_m, where
# R0, R1 are risk sums of w q and w q x (q_i = x_i' I^-1 x_i); the S2 and R1
# terms are accumulated row by row, so no p^2- or p^3-column risk sums are formed.
firth_like <- function(ctx, b) {
  x <- ctx$x
  d <- ctx$d
  at <- ctx$ev_end
  seg <- ctx$seg
  eta <- drop(x %*% b)
  shift <- max(eta)
  w <- exp(eta - shift)
  s01 <- risk_sums(ctx$x1 * w, at)
  s0 <- s01[, 1]
  s1 <- s01[, -1L, drop = FALSE]
  ll <- sum(eta * ctx$event) - sum(d * (log(s0) + shift))
  a1 <- d / s0
  a2 <- d / s0^2
  wa <- w * tail_sums(a1)[seg]
  score <- ctx$xdelta - colSums(s1 * a1)
  info <- crossprod(x * wa, x) - crossprod(s1 * sqrt(a2))
  ldet <- determinant(info, logarithm = TRUE)
  if (ldet$sign <= 0 || !is.finite(ldet$modulus))
    stop("firth_cox(): information matrix is not positive definite", call. = FALSE)
  iinv <- solve(info)
  xi <- x %*% iinv
  q <- rowSums(xi * x)
  r0 <- cumsum(w * q)[at]
  v <- s1 %*% iinv
  bv <- tail_sums(v * a2)[seg, , drop = FALSE]
  trace <- drop(crossprod(x, wa * q - 2 * w * rowSums(x * bv))) -
    colSums(s1 * (a2 * r0)) + 2 * colSums(s1 * (rowSums(v * s1) * d / s0^3))
  list(loglik = ll + 0.5 * as.numeric(ldet$modulus), score = score + 0.5 * trace, info = info)
}

# Newton-Raphson with capped steps and step halving; parameters with
# free = FALSE stay at their start value (restricted fits for p-values).
firth_newton <- function(ctx, free, start, maxit, maxhs, epsilon, gconv, maxstep) {
  b <- start
  cur <- firth_like(ctx, b)
  loglik_null <- cur$loglik
  iter <- 0L
  if (!any(free)) return(list(b = b, cur = cur, iter = 1L, loglik_null = loglik_null))
  repeat {
    iter <- iter + 1L
    b0 <- b
    ll0 <- cur$loglik
    step <- drop(solve(cur$info, cur$score * free))
    step <- pmin(pmax(step, -maxstep), maxstep)
    b[free] <- b[free] + step[free]
    cur <- firth_like(ctx, b)
    hs <- 0L
    # halve while the penalised log-likelihood has not increased; a change
    # within rounding error of the sum (|ll| * 1e-13) counts as no decrease
    while (iter != 1L && cur$loglik <= ll0 - abs(ll0) * 1e-13 && hs <= maxhs) {
      hs <- hs + 1L
      b[free] <- (b[free] + b0[free]) / 2
      cur <- firth_like(ctx, b)
    }
    if ((all(abs(b - b0) <= epsilon) && all(abs(cur$score[free]) <= gconv)) || iter >= maxit) break
  }
  list(b = b, cur = cur, iter = iter, loglik_null = loglik_null)
}

# Profile penalised likelihood limits (Venzon-Moolgavkar) and penalised
# likelihood-ratio statistics, on the standardised scale.
firth_profile <- function(ctx, cur_max, bhat, alpha, maxit, maxhs, epsilon, gconv, maxstep) {
  p <- length(bhat)
  ll_max <- cur_max$loglik
  target <- ll_max - 0.5 * stats::qchisq(1 - alpha, 1)
  vm_max <- solve(cur_max$info)
  ci <- matrix(NA_real_, p, 2)
  iter <- matrix(0L, p, 3)
  chisq <- numeric(p)
  for (k in seq_len(p)) {
    for (side in 1:2) {
      sgn <- 2 * side - 3
      b <- bhat
      fd <- cur_max$score
      vm <- vm_max
      lambda <- 0
      it <- 0L
      repeat {
        it <- it + 1L
        g <- fd
        g[k] <- g[k] + lambda
        delta <- pmin(pmax(drop(vm %*% g), -maxstep), maxstep)
        b <- b + delta
        cur <- firth_like(ctx, b)
        fd <- cur$score
        vm <- solve(cur$info)
        gvg <- sum(fd * drop(vm %*% fd))
        lambda <- sgn * sqrt(max(0, -2 * (target - cur$loglik - 0.5 * gvg) / vm[k, k]))
        g <- fd
        g[k] <- g[k] + lambda
        conv <- abs(target - cur$loglik) <= epsilon && sum(g * drop(vm %*% g)) <= epsilon
        if (conv || it >= maxit) break
      }
      ci[k, side] <- b[k]
      iter[k, side] <- it
    }
    free <- rep(TRUE, p)
    free[k] <- FALSE
    rfit <- firth_newton(ctx, free, start = rep(0, p), maxit, maxhs, epsilon, gconv, maxstep)
    chisq[k] <- 2 * (ll_max - rfit$cur$loglik)
    iter[k, 3] <- rfit$iter
  }
  list(ci = ci, chisq = chisq, iter = iter)
}

#' @rdname firth_cox
#' @param x,object A `firth_cox` fit.
#' @param row.names,optional Ignored (data frame method signature).
#' @param ... Unused.
#' @export
as.data.frame.firth_cox <- function(x, row.names = NULL, optional = FALSE, ...) {
  data.frame(term = names(x$coefficients), estimate = unname(x$coefficients),
             se = unname(x$se), lower = unname(x$ci[, 1]), upper = unname(x$ci[, 2]),
             p_value = unname(x$p_value), hr = unname(exp(x$coefficients)),
             hr_lower = unname(exp(x$ci[, 1])), hr_upper = unname(exp(x$ci[, 2])),
             stringsAsFactors = FALSE)
}

#' @rdname firth_cox
#' @importFrom stats coef vcov
#' @export
coef.firth_cox <- function(object, ...) object$coefficients

#' @rdname firth_cox
#' @export
vcov.firth_cox <- function(object, ...) object$var

#' @rdname firth_cox
#' @export
print.firth_cox <- function(x, ...) {
  cat("Firth-penalised Cox regression (Breslow ties)\n")
  cat(sprintf("n = %d, events = %d; intervals and p-values: %s\n\n", x$n, x$n_events, x$method_ci))
  tab <- as.data.frame(x)
  out <- cbind(coef = tab$estimate, se = tab$se, `exp(coef)` = tab$hr,
               lower = tab$hr_lower, upper = tab$hr_upper, p = tab$p_value)
  colnames(out)[4:5] <- sprintf(c("lower %g", "upper %g"), 1 - x$alpha)
  rownames(out) <- tab$term
  print(signif(out, 4))
  lr <- 2 * diff(x$loglik)
  cat(sprintf("\nPenalised likelihood ratio test = %.4g on %d df, p = %.4g\n", lr,
              length(x$coefficients), stats::pchisq(lr, length(x$coefficients), lower.tail = FALSE)))
  invisible(x)
}

#' @rdname firth_cox
#' @export
summary.firth_cox <- function(object, ...) {
  lr <- 2 * diff(object$loglik)
  df <- length(object$coefficients)
  structure(list(table = as.data.frame(object), loglik = object$loglik, lr = lr, df = df,
                 p_lr = stats::pchisq(lr, df, lower.tail = FALSE), var = object$var,
                 method_ci = object$method_ci, n = object$n, n_events = object$n_events,
                 iter = object$iter),
            class = "summary.firth_cox")
}

#' @export
print.summary.firth_cox <- function(x, ...) {
  cat(sprintf("Firth-penalised Cox regression: n = %d, events = %d, %d iterations\n",
              x$n, x$n_events, x$iter))
  cat(sprintf("Intervals and p-values: %s\n\n", x$method_ci))
  print(x$table, row.names = FALSE, digits = 4)
  cat(sprintf("\nPenalised log-likelihood: null %.6g, fitted %.6g\n", x$loglik[1], x$loglik[2]))
  cat(sprintf("Penalised likelihood ratio test = %.4g on %d df, p = %.4g\n", x$lr, x$df, x$p_lr))
  cat("\nCovariance matrix:\n")
  print(signif(x$var, 4))
  invisible(x)
}
