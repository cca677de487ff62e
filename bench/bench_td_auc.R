# Scaling benchmark of td_auc() / compare_td_auc() against the yardstick
# survival::concordance() (one score, with its variance) at the same n, and the
# quadratic n x n formulation for small n. Each row runs in a fresh R process
# so that its peak memory (VmHWM) is its own.
#
# Usage: Rscript bench/bench_td_auc.R [sizes] [quadratic sizes]
#   e.g. Rscript bench/bench_td_auc.R 1e3,1e4,1e5,1e6 1e3,2e3,4e3
# The installed deepnomo is used (set R_LIBS to the library holding it).

bench_data <- function(n) {
  set.seed(20240601)
  x <- stats::rnorm(n)
  ev_time <- stats::rexp(n, rate = 0.02 * exp(0.7 * x))
  cens_time <- stats::runif(n, 0, 40)
  time <- pmin(ev_time, cens_time)
  list(time = time, event = as.integer(ev_time <= cens_time),
       score1 = x + stats::rnorm(n, sd = 0.8), score2 = x + stats::rnorm(n, sd = 1.5),
       times = c(12, 24))
}

peak_mb <- function() {
  status <- readLines("/proc/self/status")
  kb <- as.numeric(gsub("[^0-9]", "", grep("^VmHWM", status, value = TRUE)))
  kb / 1024
}

run_row <- function(fun, n) {
  suppressPackageStartupMessages(library(deepnomo))
  # warm-up on a small sample so that package loading is not timed
  d <- bench_data(200)
  make_call(fun, d, 200)()
  d <- bench_data(n)
  call <- make_call(fun, d, n)
  gc()
  secs <- system.time(call())[["elapsed"]]
  cat(sprintf("%.3f %.1f %.3f\n", secs, peak_mb(), mean(d$event)))
}

make_call <- function(fun, d, n) {
  switch(fun,
    concordance = function() {
      survival::concordance(survival::Surv(d$time, d$event) ~ d$score1, reverse = TRUE)
    },
    td_auc = function() td_auc(d$score1, d$time, d$event, d$times),
    compare_td_auc = function() compare_td_auc(d$score1, d$score2, d$time, d$event, d$times),
    quadratic = function() {
      q1 <- deepnomo:::td_auc_quadratic(d$score1, d$time, d$event, d$times)
      q2 <- deepnomo:::td_auc_quadratic(d$score2, d$time, d$event, d$times)
      apply(q1$iid - q2$iid, 2, stats::sd) / sqrt(n)
    },
    stop("unknown function ", fun))
}

parse_sizes <- function(x) as.numeric(strsplit(x, ",", fixed = TRUE)[[1]])

main <- function(args) {
  if (length(args) >= 1 && args[1] == "--row") return(run_row(args[2], as.numeric(args[3])))
  sizes <- parse_sizes(if (length(args) >= 1) args[1] else "1e3,1e4,1e5,1e6")
  quad_sizes <- parse_sizes(if (length(args) >= 2) args[2] else "1e3,2e3,4e3")
  script <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)))
  rscript <- file.path(R.home("bin"), "Rscript")
  one <- function(fun, n) {
    out <- system2(rscript, c(script, "--row", fun, format(n, scientific = FALSE)), stdout = TRUE)
    v <- as.numeric(strsplit(utils::tail(out, 1), " ")[[1]])
    data.frame(n = n, fun = fun, seconds = v[1], peak_mb = v[2], event_rate = v[3])
  }
  rows <- list()
  for (n in sort(unique(c(sizes, quad_sizes)))) {
    rows[[length(rows) + 1]] <- one("concordance", n)
    if (n %in% sizes) {
      rows[[length(rows) + 1]] <- one("td_auc", n)
      rows[[length(rows) + 1]] <- one("compare_td_auc", n)
    }
    if (n %in% quad_sizes) rows[[length(rows) + 1]] <- one("quadratic", n)
  }
  tab <- do.call(rbind, rows)
  yard <- tab$seconds[tab$fun == "concordance"][match(tab$n, tab$n[tab$fun == "concordance"])]
  tab$ratio_to_concordance <- round(tab$seconds / yard, 2)
  cat("td_auc / compare_td_auc at two times with SEs; quadratic = n x n formulation, two scores;\n",
      "yardstick: survival::concordance on one score at the same n (fresh process per row)\n", sep = "")
  print(tab, row.names = FALSE)
  invisible(tab)
}

main(commandArgs(trailingOnly = TRUE))
