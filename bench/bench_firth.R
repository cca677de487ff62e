# Timing of firth_cox (5 covariates, profile penalised likelihood CIs and
# penalised likelihood-ratio p-values) against survival::coxph on the same data,
# and of find_cutpoint / compare_groups. ~30% events, continuous times.
# Usage: Rscript bench/bench_firth.R [max_n]   (default 1e5)
suppressPackageStartupMessages({
  library(survival)
  library(deepnomo)
})
args <- commandArgs(trailingOnly = TRUE)
max_n <- if (length(args)) as.numeric(args[1]) else 1e5
sizes <- c(1e3, 1e4, 1e5, 1e6)
sizes <- sizes[sizes <= max_n]

simulate <- function(n, seed = 1) {
  set.seed(seed)
  x <- matrix(rnorm(n * 5), n, 5, dimnames = list(NULL, paste0("x", 1:5)))
  x[, 5] <- as.numeric(x[, 5] > 0.8)
  t <- rexp(n, exp(drop(x %*% c(0.5, -0.3, 0.2, 0, 0.7))))
  cens <- rexp(n, 2.5)
  data.frame(time = pmin(t, cens) * 12, event = as.integer(t <= cens), x)
}

# fastest of `reps` evaluations (the machine may be shared) and the peak R
# heap (MB) of the first
measure <- function(expr_fun, reps = 3L) {
  secs <- numeric(reps)
  for (r in seq_len(reps)) {
    invisible(gc(reset = TRUE))
    t0 <- proc.time()[["elapsed"]]
    expr_fun()
    secs[r] <- proc.time()[["elapsed"]] - t0
    if (r == 1L) peak <- sum(gc()[, 6])
  }
  c(seconds = min(secs), peak_mb = peak)
}

rows <- list()
for (n in sizes) {
  d <- simulate(n)
  fo <- Surv(time, event) ~ x1 + x2 + x3 + x4 + x5
  cx <- measure(function() coxph(fo, data = d, ties = "breslow"))
  fw <- measure(function() firth_cox(fo, data = d, pl = FALSE))
  fp <- measure(function() firth_cox(fo, data = d, pl = TRUE), reps = if (n > 1e5) 1L else 2L)
  lp <- drop(as.matrix(d[, 3:7]) %*% c(0.5, -0.3, 0.2, 0, 0.7))
  cp <- measure(function() find_cutpoint(lp, d$time, d$event))
  cpt <- find_cutpoint(lp, d$time, d$event)
  cg <- measure(function() compare_groups(risk_groups(lp, cpt), d$time, d$event))
  rows[[length(rows) + 1L]] <- data.frame(
    n = n, events = sum(d$event),
    coxph_s = cx[["seconds"]], coxph_peak_mb = cx[["peak_mb"]],
    firth_wald_s = fw[["seconds"]], firth_pl_s = fp[["seconds"]], firth_pl_peak_mb = fp[["peak_mb"]],
    ratio_pl_to_coxph = fp[["seconds"]] / cx[["seconds"]],
    cutpoint_s = cp[["seconds"]], compare_groups_s = cg[["seconds"]])
  print(rows[[length(rows)]], row.names = FALSE, digits = 3)
}
cat("\nfirth_cox (5 covariates, profile CIs + penalised LR p) vs coxph (Breslow), same data:\n")
print(do.call(rbind, rows), row.names = FALSE, digits = 3)
