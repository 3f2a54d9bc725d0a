/* The detector's per-reading arithmetic in C: the "compiled" detector core.
 *
 * Why: per reading the detector does a few dozen float operations spread over a dozen Python
 * methods; interpreted, that costs ~40 us per reading, ten times the model step. This file
 * does the same arithmetic on plain C structs. It is a mirror, not a redesign: every function
 * below names the Python function in engine.py / tail.py / latch.py it mirrors, uses the same
 * formulas in the same order (so results match the Python core bit for bit: IEEE doubles,
 * libm exp/log/sqrt/pow in both) and the same min/max semantics (PYMAX/PYMIN are Python's
 * max(a, b)/min(a, b), which matter for NaN and -0.0). A semantic change in engine.py must be
 * ported here; tests/test_kernel.py runs both cores side by side and fails until it is.
 *
 * The Python Detector keeps its API, its streams and assets (names, slots, alert ids, units)
 * and does the rare work (creating streams, alerts, events, snapshots); this kernel keeps the
 * numeric state and runs a tick: judge -> asset scores and latches -> freeze -> adapt, then
 * writes the model inputs into the caller's float32 buffers (store() takes the outputs back).
 *
 * Robustness: every object from outside is checked (types, buffer shapes, slot ranges); state
 * arrays grow; integers from restored checkpoints saturate instead of overflowing; a re-entrant
 * call (from a Reading attribute or ScoredReading constructor) is refused, not followed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* engine.py constants */
#define Z_INPUT_CLIP 8.0
#define Z_SCORE_CLIP 1e6
#define HUBER 3.0
#define SCALE_FLOOR_REL 1e-4
#define SCALE_FLOOR_ABS 1e-9
#define DT_CLIP 50.0
#define INTERVAL_ALPHA 0.05
#define LONG_READINGS 2000.0
#define SCORE_FROM 30
#define BAND_SIGMAS 3.0
#define BURST_WINDOW 10
#define STUCK_MIN_RUN 20
#define STUCK_FACTOR 3.0
#define STUCK_Q 36.0
#define HORIZON 100
/* tail.py: TailModel() defaults, as engine.py constructs it */
#define TAIL_SIZE 1000
#define TAIL_MIN_COUNT 30
#define LEARN_P 3e-4         /* tail.LEARN_P */
#define SHORT_BETA_FLOOR 0.25 /* engine._SHORT_BETA_FLOOR */
#define MEDIUM_BETA_FLOOR 0.1 /* engine._MEDIUM_BETA_FLOOR */
#define MEDIUM_ALPHA 0.1      /* engine._MEDIUM_ALPHA */
#define MEDIUM_CLIP 25.0      /* engine._MEDIUM_CLIP */
#define TAIL_HORIZON 100
#define TAIL_REFRESH 25

/* Python's max(a, b) / min(a, b): the first argument wins unless the second compares
 * strictly greater / smaller. */
#define PYMAX(a, b) ((b) > (a) ? (b) : (a))
#define PYMIN(a, b) ((b) < (a) ? (b) : (a))
/* Counters restored from a checkpoint are clamped here, so +1 never overflows. */
#define COUNT_LIMIT (1LL << 62)

/* Note kinds reported by tick(), in the order they happen (the Python side builds the
 * Event / AlertChange objects from them). */
enum { NOTE_GAP = 0, NOTE_ALERT = 1, NOTE_NEW_NORMAL = 2, NOTE_DRIFT = 3 };
enum { CHANGE_NONE = 0, CHANGE_RAISED = 1, CHANGE_CLEARED = 2 };

/* Python's float ** float is libm's pow(); the volatiles keep the compiler from rewriting
 * pow(x, 2.0) as x * x or pow(2.0, x) as exp2(x). It matters: glibc's pow(x, 2.0) and x * x
 * differ in the last bit for some x (found by tests/test_kernel.py on the "stuck" signal). */
static double py_pow(double base, double exponent) {
    volatile double b = base, e = exponent;
    return pow(b, e);
}

/* --- tail.py: TailModel ------------------------------------------------------------------ */

typedef struct {
    float *ring;   /* insertion order; len values */
    float *sorted; /* the same values, ascending */
    Py_ssize_t len;
    Py_ssize_t pos;
    long long count;
    long long since_refresh;
    double q50, q90, q99;
    double beta_floor; /* TailModel(beta_floor=...) */
} Tail;

static void tail_free(Tail *t) {
    PyMem_Free(t->ring);
    PyMem_Free(t->sorted);
    t->ring = t->sorted = NULL;
}

static int tail_alloc(Tail *t) {
    if (t->ring != NULL) return 0;
    t->ring = PyMem_Malloc(TAIL_SIZE * sizeof(float));
    t->sorted = PyMem_Malloc(TAIL_SIZE * sizeof(float));
    if (t->ring == NULL || t->sorted == NULL) {
        tail_free(t);
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* TailModel.ready */
static int tail_ready(const Tail *t) { return t->count >= TAIL_MIN_COUNT; }

/* TailModel._quantile */
static double tail_quantile(const Tail *t, double q) {
    double pos = (double)(t->len - 1) * q;
    Py_ssize_t lo = (Py_ssize_t)pos;
    Py_ssize_t hi = PYMIN(lo + 1, t->len - 1);
    double frac = pos - (double)lo;
    double a = t->sorted[lo], b = t->sorted[hi];
    return frac >= 0.5 ? b - (b - a) * (1.0 - frac) : a + (b - a) * frac;
}

/* TailModel._refresh */
static void tail_refresh(Tail *t) {
    if (t->len > 0) {
        t->q50 = tail_quantile(t, 0.5);
        t->q90 = tail_quantile(t, 0.9);
        t->q99 = tail_quantile(t, 0.99);
    }
    t->since_refresh = 0;
}

/* bisect.bisect_left / bisect.bisect_right over the sorted copy */
static Py_ssize_t bisect_left(const float *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if ((double)a[mid] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static Py_ssize_t bisect_right(const float *a, Py_ssize_t n, double x) {
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (x < (double)a[mid]) hi = mid; else lo = mid + 1;
    }
    return lo;
}

/* TailModel.exceedance */
static double tail_exceedance(const Tail *t, double value) {
    double beta = (t->q99 - t->q90) / log(10.0);
    double b2 = (t->q90 - t->q50) / log(5.0);
    beta = PYMAX(beta, b2);
    beta = PYMAX(beta, t->beta_floor);
    if (value > t->q90) return 0.1 * exp(-(value - t->q90) / beta);
    if (value > t->q50) return 0.5 - 0.4 * (value - t->q50) / PYMAX(t->q90 - t->q50, 1e-12);
    return 0.5;
}

/* TailModel.update: 1 learned, 0 too far out in the tail to learn, -1 error */
static int tail_update(Tail *t, double value) {
    if (t->count >= TAIL_MIN_COUNT && tail_exceedance(t, value) < LEARN_P) return 0;
    if (tail_alloc(t) < 0) return -1;
    float v = (float)value; /* _float32 */
    Py_ssize_t sorted_len = t->len;
    if (t->len < TAIL_SIZE) {
        t->ring[t->len++] = v;
    } else {
        float old = t->ring[t->pos];
        Py_ssize_t i = bisect_left(t->sorted, sorted_len, old);
        if (i >= sorted_len) i = sorted_len - 1; /* only for NaN, which never gets here */
        memmove(t->sorted + i, t->sorted + i + 1, (size_t)(sorted_len - 1 - i) * sizeof(float));
        sorted_len--;
        t->ring[t->pos] = v;
    }
    Py_ssize_t j = bisect_right(t->sorted, sorted_len, v); /* bisect.insort */
    memmove(t->sorted + j + 1, t->sorted + j, (size_t)(sorted_len - j) * sizeof(float));
    t->sorted[j] = v;
    t->pos = (t->pos + 1) % TAIL_SIZE;
    if (t->count < COUNT_LIMIT) t->count++;
    t->since_refresh++;
    if (t->count <= TAIL_SIZE || t->since_refresh >= TAIL_REFRESH) tail_refresh(t);
    return 1;
}



/* --- latch.py: AlertLatch ---------------------------------------------------------------- */

typedef struct {
    int active;
    long long above, below;
    double cooldown_until;
} Latch;

/* AlertLatch.update */
static int latch_update(Latch *l, double score, double ts, int armed, double threshold,
                        double clear_threshold, long long min_duration, double cooldown,
                        long long cooldown_min_duration) {
    if (l->active) {
        l->below = score < clear_threshold ? PYMIN(l->below + 1, COUNT_LIMIT) : 0;
        if (l->below >= min_duration) {
            l->active = 0;
            l->below = 0;
            l->above = 0;
            l->cooldown_until = ts + cooldown;
            return CHANGE_CLEARED;
        }
        return CHANGE_NONE;
    }
    l->above = score >= threshold ? PYMIN(l->above + 1, COUNT_LIMIT) : 0;
    long long needed;
    if (ts >= l->cooldown_until)
        needed = min_duration;
    else if (cooldown_min_duration > 0)
        needed = PYMAX(min_duration, cooldown_min_duration);
    else
        return CHANGE_NONE;
    if (armed && l->above >= needed) {
        l->active = 1;
        l->above = 0;
        l->below = 0;
        return CHANGE_RAISED;
    }
    return CHANGE_NONE;
}

/* --- engine.py: _Channel, _Asset, _Step -------------------------------------------------- */

typedef struct {
    Py_ssize_t asset;
    double mean, var;
    long long n;
    double last_ts, interval, pred, logvar, calib, slow;
    int drifting;
    double q;
    long long reason;
    long long run;
    double run_max, last_value, last_expected, band_low, band_high;
    int fresh;
    double short_, recent[BURST_WINDOW];
    long long n_raw;
    Tail tail;
    double level, surprise;
    double medium, level_medium;
    Tail tail_medium;
    int held;    /* _Channel.held: it raised the asset's open alert */
    int leveled; /* a new level this tick (_score_channels' levels) */
} Chan;

typedef struct {
    Latch latch;
    Py_ssize_t *channels; /* slots, in creation order */
    Py_ssize_t nch, capch;
    double score;
    double raised_ts;
    int accepted;
    double max_score;
    long long mark; /* the tick that last touched it */
    int frozen;
} Asset;

typedef struct {
    Py_ssize_t slot, index; /* channel, and position of the reading in the tick */
    PyObject *stream, *ts_obj, *value_obj;
    double ts, value;
    int first;
    double mean, var, scale, z, dt, dt_model;
    int has_pred;
    double err2, expected;
} Step;

typedef struct {
    double max_gap, baseline_halflife, drift_halflife, drift_threshold;
    double threshold, clear_threshold, cooldown, accept_after;
    long long warmup, min_duration, cooldown_min_duration;
    int has_accept_after;
} Config;

typedef struct {
    PyObject_HEAD
    Config cfg;
    Chan *ch;
    Py_ssize_t nch, capch;
    Asset *as;
    Py_ssize_t nas, capas;
    PyObject *scored_cls;
    Step *steps;
    Py_ssize_t capsteps;
    Py_ssize_t *touched, captouched;
    long long tick_no;
    Py_ssize_t last_b; /* readings of the last tick, awaiting store() */
    int busy;
    /* bind(): the stream -> slot dict and the model buffers, held between ticks (acquiring
     * four buffers per tick cost as much as the arithmetic of a reading). */
    PyObject *slot_of;
    Py_buffer vx, vdt, vhb, vh;
    int bound;
} Kernel;

/* _Channel.reset */
static void chan_reset(Chan *c) {
    c->mean = c->var = 0.0;
    c->n = 0;
    c->interval = NAN;
    c->pred = NAN;
    c->logvar = 0.0;
    c->calib = 1.0;
    c->drifting = 0;
    c->q = 0.0;
    c->reason = 0;
    c->run = 0;
    c->run_max = 0.0;
    c->last_expected = c->band_low = c->band_high = NAN;
}

/* _Channel.__init__ */
static void chan_init(Chan *c, Py_ssize_t asset) {
    memset(c, 0, sizeof(*c));
    c->asset = asset;
    c->last_ts = NAN;
    c->tail.beta_floor = SHORT_BETA_FLOOR;
    c->tail_medium.beta_floor = MEDIUM_BETA_FLOOR;
    chan_reset(c);
}

/* Detector._elevated */
static int elevated(const Kernel *k, const Asset *a) {
    return a->latch.active || a->score >= k->cfg.clear_threshold;
}

/* Detector._held (HOLD_SURPRISE is math.log(100.0), computed once in kernel_init) */
static double HOLD_SURPRISE;
static int held(const Kernel *k, const Chan *c) {
    if (k->as[c->asset].latch.active) return c->held;
    return c->surprise >= HOLD_SURPRISE;
}

/* _window_level */
static double window_level(double *short_, double *recent, long long *n_raw, double raw,
                           int restart) {
    *short_ = restart ? raw : *short_ + (1.0 / 3.0) * (raw - *short_);
    long long slot = *n_raw % BURST_WINDOW;
    if (slot < 0) slot += BURST_WINDOW; /* Python's % */
    recent[slot] = raw;
    if (*n_raw < COUNT_LIMIT) (*n_raw)++;
    double s[BURST_WINDOW];
    memcpy(s, recent, sizeof(s));
    for (int i = 1; i < BURST_WINDOW; i++) { /* insertion sort: stable, like sorted() */
        double v = s[i];
        int j = i - 1;
        while (j >= 0 && v < s[j]) {
            s[j + 1] = s[j];
            j--;
        }
        s[j + 1] = v;
    }
    return PYMAX(*short_, s[BURST_WINDOW - 2]);
}

/* --- the notes a tick reports ---------------------------------------------------------- */

static int note(PyObject **notes, PyObject *item) {
    if (item == NULL) return -1;
    if (*notes == NULL && (*notes = PyList_New(0)) == NULL) {
        Py_DECREF(item);
        return -1;
    }
    int rc = PyList_Append(*notes, item);
    Py_DECREF(item);
    return rc;
}

/* Detector._stuck */
static int stuck(Kernel *k, Chan *c, double value, long long n, double var, double mean) {
    long long run = c->run;
    int repeat = n >= 1 && value == c->last_value;
    int warming = n <= k->cfg.warmup;
    if (!repeat && run > 0 && !elevated(k, &k->as[c->asset]))
        c->run_max = PYMAX(c->run_max, (double)run);
    c->run = repeat ? PYMIN(run + 1, COUNT_LIMIT) : 0;
    if (warming) c->run_max = PYMAX(c->run_max, (double)c->run);
    double floor = SCALE_FLOOR_REL * fabs(mean) + SCALE_FLOOR_ABS;
    int varied = var > py_pow(floor, 2.0);
    double limit = PYMAX((double)STUCK_MIN_RUN, STUCK_FACTOR * c->run_max);
    return varied && !warming && (double)c->run > limit;
}

/* Detector._judge. h is the model state matrix (a gap zeroes the channel's row). */
static int judge(Kernel *k, Step *s, float *h, Py_ssize_t hidden, PyObject **notes) {
    const Config *cfg = &k->cfg;
    Chan *c = &k->ch[s->slot];
    double value = s->value, ts = s->ts;
    double dt = ts - c->last_ts;
    if (dt > cfg->max_gap) {
        chan_reset(c);
        memset(h + s->slot * hidden, 0, (size_t)hidden * sizeof(float));
        if (note(notes, Py_BuildValue("(ind)", NOTE_GAP, s->index, dt)) < 0) return -1;
        dt = NAN;
    } else if (dt < 0.0) {
        dt = 0.0;
    }
    int have_dt = !isnan(dt);
    long long n = c->n;
    int first = n == 0;

    double interval = c->interval, new_interval, dt_model;
    if (isnan(interval)) {
        new_interval = dt;
    } else {
        double lo = PYMAX(dt, 0.1 * interval);
        new_interval = interval + INTERVAL_ALPHA * (PYMIN(lo, 10 * interval) - interval);
    }
    if (have_dt && new_interval > 0) {
        c->interval = new_interval;
        double r = PYMAX(dt / new_interval, 0.0);
        dt_model = PYMIN(r, DT_CLIP);
    } else {
        dt_model = 1.0;
    }

    double mean = first ? value : c->mean;
    double var = c->var;
    double scale = PYMAX(sqrt(var), SCALE_FLOOR_REL * fabs(mean) + SCALE_FLOOR_ABS);
    double z = 0.0;
    if (!first) {
        z = PYMAX((value - mean) / scale, -Z_SCORE_CLIP);
        z = PYMIN(z, Z_SCORE_CLIP);
    }

    double pred = c->pred;
    double pred_var = exp(c->logvar) * c->calib;
    int no_pred = isnan(pred);
    int has_pred = !no_pred && n >= SCORE_FROM;
    double pred0 = no_pred ? 0.0 : pred;
    double err2 = has_pred ? py_pow(z - pred0, 2.0) / pred_var : 0.0;
    double stuck_q = stuck(k, c, value, n, var, mean) ? STUCK_Q : 0.0;
    double level2 = z * z;
    if (level2 >= err2 && level2 >= stuck_q) {
        c->q = level2; c->reason = 0;
    } else if (err2 >= stuck_q) {
        c->q = err2; c->reason = 1;
    } else {
        c->q = stuck_q; c->reason = 2;
    }
    if (n < SCORE_FROM) c->q = 0.0;
    c->fresh = 1;
    double expected = no_pred ? NAN : mean + pred0 * scale;
    c->last_value = value;
    double half;
    if (level2 >= err2 || isnan(expected)) {
        c->last_expected = mean;
        half = BAND_SIGMAS * scale;
    } else {
        c->last_expected = expected;
        half = BAND_SIGMAS * sqrt(pred_var) * scale;
    }
    c->band_low = c->last_expected - half;
    c->band_high = c->last_expected + half;

    s->first = first;
    s->mean = mean;
    s->var = var;
    s->scale = scale;
    s->z = z;
    s->dt = dt;
    s->dt_model = dt_model;
    s->has_pred = has_pred;
    s->err2 = err2;
    s->expected = expected;
    return 0;
}

/* Detector._score_channels (the tail updates at its end are in score_asset, which
 * knows whether the asset is elevated after scoring; `leveled` is Python's `levels`). */
static void score_channels(Kernel *k, Asset *a) {
    double smallest = 1.0;
    int ready = 1;
    for (Py_ssize_t i = 0; i < a->nch; i++) {
        Chan *c = &k->ch[a->channels[i]];
        if (c->n < SCORE_FROM) continue; /* not judged */
        if (c->fresh) {
            c->fresh = 0;
            int restart = c->tail.count == 0;
            c->level = window_level(&c->short_, c->recent, &c->n_raw, c->q, restart);
            double clipped = PYMIN(c->q, MEDIUM_CLIP);
            c->medium = restart ? clipped : c->medium + MEDIUM_ALPHA * (clipped - c->medium);
            c->level_medium = c->medium;
            c->leveled = 1;
        }
        double p = tail_ready(&c->tail) ? tail_exceedance(&c->tail, c->level) : 1.0;
        if (tail_ready(&c->tail_medium))
            p = 2.0 * PYMIN(p, tail_exceedance(&c->tail_medium, c->level_medium));
        c->surprise = -log(PYMAX(p, 1e-300));
        smallest = PYMIN(smallest, p);
        ready = ready && tail_ready(&c->tail);
    }
    double p_asset = PYMIN(1.0, (double)a->nch * smallest);
    a->score = ready ? exp(-(double)HORIZON * p_asset) : 0.0;
}

/* Detector._accepted */
static int accepted(Kernel *k, Asset *a, Py_ssize_t index, double ts, PyObject **notes) {
    if (a->accepted && a->latch.active) return 1;
    if (!k->cfg.has_accept_after || !a->latch.active || ts - a->raised_ts < k->cfg.accept_after)
        return 0;
    if (!a->accepted) {
        a->accepted = 1;
        if (note(notes, Py_BuildValue("(indd)", NOTE_NEW_NORMAL, index, ts, ts - a->raised_ts)) < 0)
            return -1;
    }
    return 1;
}

/* Detector._score_asset */
static int score_asset(Kernel *k, Py_ssize_t index, double ts, PyObject **notes) {
    const Config *cfg = &k->cfg;
    Asset *a = &k->as[index];
    Py_ssize_t judged = 0;
    for (Py_ssize_t i = 0; i < a->nch; i++) {
        if (k->ch[a->channels[i]].n >= SCORE_FROM) judged++;
    }
    if (judged == 0) {
        a->score = 0.0;
        return 0;
    }
    long long settle = PYMAX((long long)SCORE_FROM, cfg->warmup / 2);
    int settled = 1, warm = 1;
    for (Py_ssize_t i = 0; i < a->nch; i++) {
        long long n = k->ch[a->channels[i]].n;
        settled = settled && n > settle;
        warm = warm && n > cfg->warmup;
    }
    score_channels(k, a);
    if (settled && !elevated(k, a)) {
        for (Py_ssize_t i = 0; i < a->nch; i++) {
            Chan *c = &k->ch[a->channels[i]];
            if (!c->leveled) continue;
            if (tail_update(&c->tail, c->level) < 0) return -1;
            if (tail_update(&c->tail_medium, c->level_medium) < 0) return -1;
        }
    }
    for (Py_ssize_t i = 0; i < a->nch; i++) k->ch[a->channels[i]].leveled = 0;
    int change = latch_update(&a->latch, a->score, ts, warm, cfg->threshold,
                              cfg->clear_threshold, cfg->min_duration, cfg->cooldown,
                              cfg->cooldown_min_duration);
    if (a->latch.active) a->max_score = PYMAX(a->max_score, a->score);
    if (change == CHANGE_RAISED) {
        a->max_score = a->score;
        a->raised_ts = ts;
        a->accepted = 0;
        for (Py_ssize_t i = 0; i < a->nch; i++) {
            Chan *c = &k->ch[a->channels[i]];
            c->held = c->surprise >= HOLD_SURPRISE;
        }
    }
    if (change != CHANGE_NONE &&
        note(notes, Py_BuildValue("(inid)", NOTE_ALERT, index, change, ts)) < 0)
        return -1;
    return 0;
}

/* Detector._adapt */
static int adapt(Kernel *k, Step *s, int frozen, PyObject **notes) {
    const Config *cfg = &k->cfg;
    Chan *c = &k->ch[s->slot];
    int first = s->first;
    double mean = s->mean, scale = s->scale, value = s->value;
    double dt0 = isnan(s->dt) ? 0.0 : s->dt;
    long long n1 = c->n + 1;

    double alpha = isnan(s->dt) ? 0.0 : 1.0 - py_pow(2.0, -dt0 / cfg->baseline_halflife);
    if (n1 <= PYMAX(cfg->warmup, 1LL)) alpha = PYMAX(alpha, 1.0 / (double)n1);
    if (frozen && !first) alpha = 0.0;
    double dev = value - mean;
    if (n1 > cfg->warmup) {
        dev = PYMAX(dev, -HUBER * scale);
        dev = PYMIN(dev, HUBER * scale);
    }
    if (first) dev = 0.0;
    double new_mean = mean + alpha * dev;
    c->var = first ? 0.0 : (1.0 - alpha) * (s->var + alpha * dev * dev);
    c->mean = new_mean;
    c->n = PYMIN(n1, COUNT_LIMIT);
    c->last_ts = s->ts;

    if (s->has_pred) {
        double ratio = PYMIN(s->err2 * c->calib, 1e4);
        double rate = frozen ? 0.0 : PYMAX(1.0 / (double)n1, 1.0 / LONG_READINGS);
        c->calib = PYMAX(c->calib + rate * (ratio - c->calib), 1e-3);
    }

    int warm = n1 > cfg->warmup;
    double slow = (first || !warm) ? new_mean : c->slow;
    if (warm && !frozen) slow += (1.0 - py_pow(2.0, -dt0 / cfg->drift_halflife)) * (new_mean - slow);
    c->slow = slow;
    double distance = fabs(new_mean - slow) / scale;
    int was = c->drifting;
    double limit = was ? 0.5 * cfg->drift_threshold : cfg->drift_threshold;
    c->drifting = warm && distance > limit;
    if (c->drifting && !was &&
        note(notes, Py_BuildValue("(indddd)", NOTE_DRIFT, s->index, s->ts, new_mean, slow,
                                  distance)) < 0)
        return -1;
    return 0;
}

/* --- buffers ------------------------------------------------------------------------------ */

/* A matrix from numpy (or anything with the buffer protocol). Writable ones (the model
 * inputs and h) must be C-contiguous float32; read-only ones (the model outputs) may be
 * strided float32 or float64, as a model may return either. */
static int get_matrix(PyObject *obj, Py_buffer *view, int writable, const char *what) {
    int flags = writable ? (PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE | PyBUF_FORMAT)
                         : (PyBUF_STRIDES | PyBUF_FORMAT);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    const char *f = view->format ? view->format : "B";
    size_t fl = strlen(f);
    char code = fl ? f[fl - 1] : 'B';
    int ok = view->ndim == 2 && (fl == 1 || (fl == 2 && strchr("@=<", f[0]) != NULL)) &&
             ((code == 'f' && view->itemsize == 4) ||
              (!writable && code == 'd' && view->itemsize == 8));
    if (!ok) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be a 2-d float32%s array", what,
                     writable ? " C-contiguous" : " or float64");
        return -1;
    }
    return 0;
}

static double elem(const Py_buffer *v, Py_ssize_t i, Py_ssize_t j) {
    Py_ssize_t s0 = v->strides ? v->strides[0] : v->shape[1] * v->itemsize;
    Py_ssize_t s1 = v->strides ? v->strides[1] : v->itemsize;
    const char *p = (const char *)v->buf + i * s0 + j * s1;
    if (v->itemsize == 8) {
        double d;
        memcpy(&d, p, sizeof(d));
        return d;
    }
    float f;
    memcpy(&f, p, sizeof(f));
    return (double)f;
}

/* --- Record: fast construction of the frozen slots dataclasses that carry readings ------- */

/* A frozen dataclass with slots (Reading, ScoredReading) is built by a generated __init__
 * that calls object.__setattr__ once per field: ~2 us per object, more than the arithmetic of
 * a reading. Record(cls, descriptors, defaults) builds the same object by allocating it and
 * setting the same slot descriptors, in field order, with the trailing defaults: what
 * __init__ does, minus the interpreter. engine.record_constructor() only uses it for
 * dataclasses without __post_init__ or default factories. */
typedef struct {
    PyObject_HEAD
    PyTypeObject *cls;
    PyObject *descrs;   /* tuple of member descriptors, field order */
    PyObject *defaults; /* tuple: defaults of the trailing fields */
    vectorcallfunc vectorcall;
} Record;

static PyObject *record_build(Record *r, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t nf = PyTuple_GET_SIZE(r->descrs), nd = PyTuple_GET_SIZE(r->defaults);
    if (nargs < nf - nd || nargs > nf) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd to %zd arguments (%zd given)",
                     r->cls->tp_name, nf - nd, nf, nargs);
        return NULL;
    }
    PyObject *obj = r->cls->tp_alloc(r->cls, 0);
    if (obj == NULL) return NULL;
    for (Py_ssize_t i = 0; i < nf; i++) {
        PyObject *d = PyTuple_GET_ITEM(r->descrs, i);
        PyObject *v = i < nargs ? args[i] : PyTuple_GET_ITEM(r->defaults, i - (nf - nd));
        if (Py_TYPE(d)->tp_descr_set(d, obj, v) < 0) {
            Py_DECREF(obj);
            return NULL;
        }
    }
    return obj;
}

static PyObject *record_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                   PyObject *kwnames) {
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0) {
        PyErr_SetString(PyExc_TypeError, "Record takes positional arguments only");
        return NULL;
    }
    return record_build((Record *)self, args, PyVectorcall_NARGS(nargsf));
}

static int record_init(Record *r, PyObject *args, PyObject *kwds) {
    PyObject *cls, *descrs, *defaults;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Record(cls, descriptors, defaults)");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &cls, &PyTuple_Type, &descrs,
                          &PyTuple_Type, &defaults))
        return -1;
    if (PyTuple_GET_SIZE(defaults) > PyTuple_GET_SIZE(descrs)) {
        PyErr_SetString(PyExc_ValueError, "more defaults than fields");
        return -1;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(descrs); i++) {
        PyObject *d = PyTuple_GET_ITEM(descrs, i);
        if (Py_TYPE(d)->tp_descr_set == NULL) {
            PyErr_SetString(PyExc_TypeError, "descriptors must be settable (slots)");
            return -1;
        }
    }
    Py_INCREF(cls);
    Py_INCREF(descrs);
    Py_INCREF(defaults);
    Py_XSETREF(r->cls, (PyTypeObject *)cls);
    Py_XSETREF(r->descrs, descrs);
    Py_XSETREF(r->defaults, defaults);
    r->vectorcall = record_vectorcall;
    return 0;
}

static PyObject *record_call(PyObject *self, PyObject *args, PyObject *kwds) {
    Record *r = (Record *)self;
    if (r->cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Record not initialised");
        return NULL;
    }
    if (kwds != NULL && PyDict_GET_SIZE(kwds) > 0) {
        PyErr_SetString(PyExc_TypeError, "Record takes positional arguments only");
        return NULL;
    }
    return record_build(r, &PyTuple_GET_ITEM(args, 0), PyTuple_GET_SIZE(args));
}

static void record_dealloc(Record *r) {
    Py_XDECREF(r->cls);
    Py_XDECREF(r->descrs);
    Py_XDECREF(r->defaults);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static PyTypeObject RecordType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.detector._kernel.Record",
    .tp_basicsize = sizeof(Record),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Record(cls, descriptors, defaults): builds a frozen slots dataclass quickly.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)record_init,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_call = record_call,
    .tp_vectorcall_offset = offsetof(Record, vectorcall),
};

/* --- the Kernel type ---------------------------------------------------------------------- */

static void unbind(Kernel *k);

static void release_steps(Kernel *k, Py_ssize_t b) {
    for (Py_ssize_t i = 0; i < b; i++) {
        Py_CLEAR(k->steps[i].stream);
        Py_CLEAR(k->steps[i].ts_obj);
        Py_CLEAR(k->steps[i].value_obj);
    }
}

static int kernel_init(Kernel *k, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"max_gap", "warmup", "baseline_halflife", "drift_halflife",
                             "drift_threshold", "threshold", "clear_threshold", "min_duration",
                             "cooldown", "cooldown_min_duration", "accept_after", "scored",
                             NULL};
    Config cfg;
    PyObject *accept_after, *scored;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "dLdddddLdLOO", kwlist, &cfg.max_gap,
                                     &cfg.warmup, &cfg.baseline_halflife, &cfg.drift_halflife,
                                     &cfg.drift_threshold, &cfg.threshold, &cfg.clear_threshold,
                                     &cfg.min_duration, &cfg.cooldown,
                                     &cfg.cooldown_min_duration, &accept_after, &scored))
        return -1;
    if (accept_after == Py_None) {
        cfg.has_accept_after = 0;
        cfg.accept_after = 0.0;
    } else {
        cfg.has_accept_after = 1;
        cfg.accept_after = PyFloat_AsDouble(accept_after);
        if (cfg.accept_after == -1.0 && PyErr_Occurred()) return -1;
    }
    if (!PyCallable_Check(scored)) {
        PyErr_SetString(PyExc_TypeError, "scored must be callable (the ScoredReading class)");
        return -1;
    }
    if (k->nch || k->nas) {
        PyErr_SetString(PyExc_RuntimeError, "a Kernel is initialised once");
        return -1;
    }
    k->cfg = cfg;
    Py_INCREF(scored);
    Py_XSETREF(k->scored_cls, scored);
    return 0;
}

static void kernel_dealloc(Kernel *k) {
    if (k->steps) release_steps(k, k->capsteps);
    for (Py_ssize_t i = 0; i < k->nch; i++) {
        tail_free(&k->ch[i].tail);
        tail_free(&k->ch[i].tail_medium);
    }
    for (Py_ssize_t i = 0; i < k->nas; i++) PyMem_Free(k->as[i].channels);
    PyMem_Free(k->ch);
    PyMem_Free(k->as);
    PyMem_Free(k->steps);
    PyMem_Free(k->touched);
    Py_XDECREF(k->scored_cls);
    unbind(k);
    Py_TYPE(k)->tp_free((PyObject *)k);
}

static int grow(void **array, Py_ssize_t *cap, Py_ssize_t need, size_t item) {
    if (need <= *cap) return 0;
    Py_ssize_t cap2 = *cap ? *cap : 8;
    while (cap2 < need) {
        if (cap2 > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)item) {
            PyErr_NoMemory();
            return -1;
        }
        cap2 *= 2;
    }
    void *p = PyMem_Realloc(*array, (size_t)cap2 * item);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset((char *)p + (size_t)*cap * item, 0, (size_t)(cap2 - *cap) * item);
    *array = p;
    *cap = cap2;
    return 0;
}

static int check_free(Kernel *k) {
    if (k->busy) {
        PyErr_SetString(PyExc_RuntimeError, "detector kernel re-entered during a tick");
        return -1;
    }
    if (k->scored_cls == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel not initialised");
        return -1;
    }
    return 0;
}

static PyObject *kernel_add_asset(Kernel *k, PyObject *noargs) {
    (void)noargs;
    if (check_free(k) < 0) return NULL;
    if (grow((void **)&k->as, &k->capas, k->nas + 1, sizeof(Asset)) < 0) return NULL;
    Asset *a = &k->as[k->nas];
    memset(a, 0, sizeof(*a));
    a->latch.cooldown_until = -INFINITY;
    a->mark = -1;
    return PyLong_FromSsize_t(k->nas++);
}

static PyObject *kernel_add_channel(Kernel *k, PyObject *arg) {
    if (check_free(k) < 0) return NULL;
    Py_ssize_t asset = PyLong_AsSsize_t(arg);
    if (asset == -1 && PyErr_Occurred()) return NULL;
    if (asset < 0 || asset >= k->nas) {
        PyErr_SetString(PyExc_IndexError, "no such asset");
        return NULL;
    }
    Asset *a = &k->as[asset];
    if (grow((void **)&a->channels, &a->capch, a->nch + 1, sizeof(Py_ssize_t)) < 0) return NULL;
    if (grow((void **)&k->ch, &k->capch, k->nch + 1, sizeof(Chan)) < 0) return NULL;
    chan_init(&k->ch[k->nch], asset);
    a->channels[a->nch++] = k->nch;
    return PyLong_FromSsize_t(k->nch++);
}

/* Detector._tick, up to the model step: tick(readings), after bind().
 * Returns None when no reading is usable, False when a usable reading's stream has no slot
 * yet (nothing was changed: create it, bind again, call again), an int when the batch
 * buffers need that many rows (nothing was changed either), else (b, scored, notes). */
static PyObject *kernel_tick(Kernel *k, PyObject *tick) {
    if (check_free(k) < 0) return NULL;
    if (!k->bound) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel.tick before bind()");
        return NULL;
    }
    PyObject *slot_of = k->slot_of;
    /* A tuple of its own: reading attributes may run code, which must not resize it. */
    PyObject *seq = PySequence_Tuple(tick);
    if (seq == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (grow((void **)&k->steps, &k->capsteps, n, sizeof(Step)) < 0 ||
        grow((void **)&k->touched, &k->captouched, n, sizeof(Py_ssize_t)) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *result = NULL, *notes = NULL, *scored = NULL;
    Py_ssize_t b = 0;
    int unknown = 0;
    static PyObject *s_stream, *s_ts, *s_value;
    if (s_stream == NULL) {
        s_stream = PyUnicode_InternFromString("stream");
        s_ts = PyUnicode_InternFromString("ts");
        s_value = PyUnicode_InternFromString("value");
        if (!s_stream || !s_ts || !s_value) goto done_seq;
    }
    k->busy = 1;
    /* Phase 1: read the readings (process_ticks: only finite values and times are usable). */
    for (Py_ssize_t i = 0; i < n; i++) {
        Step *s = &k->steps[b];
        PyObject *r = PyTuple_GET_ITEM(seq, i);
        s->value_obj = PyObject_GetAttr(r, s_value);
        if (s->value_obj == NULL) goto fail;
        s->value = PyFloat_AsDouble(s->value_obj);
        if (s->value == -1.0 && PyErr_Occurred()) goto fail;
        if (!isfinite(s->value)) {
            Py_CLEAR(s->value_obj);
            continue;
        }
        s->ts_obj = PyObject_GetAttr(r, s_ts);
        if (s->ts_obj == NULL) goto fail;
        s->ts = PyFloat_AsDouble(s->ts_obj);
        if (s->ts == -1.0 && PyErr_Occurred()) goto fail;
        if (!isfinite(s->ts)) {
            Py_CLEAR(s->value_obj);
            Py_CLEAR(s->ts_obj);
            continue;
        }
        s->stream = PyObject_GetAttr(r, s_stream);
        if (s->stream == NULL) goto fail;
        PyObject *slot = PyDict_GetItemWithError(slot_of, s->stream);
        if (slot == NULL) {
            if (PyErr_Occurred()) goto fail;
            unknown = 1;
            s->slot = -1;
        } else {
            s->slot = PyLong_AsSsize_t(slot);
            if (s->slot == -1 && PyErr_Occurred()) goto fail;
        }
        s->index = i;
        b++;
    }
    if (b == 0) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (unknown) {
        result = Py_NewRef(Py_False);
        goto done;
    }
    for (Py_ssize_t i = 0; i < b; i++) {
        if (k->steps[i].slot < 0 || k->steps[i].slot >= k->nch) {
            PyErr_SetString(PyExc_ValueError, "stream slot out of range");
            goto fail;
        }
    }
    if (k->vx.shape[0] < b || k->vdt.shape[0] < b || k->vhb.shape[0] < b) {
        result = PyLong_FromSsize_t(b); /* grow the batch buffers and bind again */
        goto done;
    }
    if (k->vh.shape[0] < k->nch) {
        PyErr_SetString(PyExc_ValueError, "h has fewer rows than there are streams: bind again");
        goto fail;
    }
    Py_ssize_t hidden = k->vh.shape[1];
    float *h = (float *)k->vh.buf;

    /* Phase 2: the arithmetic. _tick: judge every reading ... */
    k->tick_no++;
    for (Py_ssize_t i = 0; i < b; i++)
        if (judge(k, &k->steps[i], h, hidden, &notes) < 0) goto fail;
    /* ... asset scores and alert latches, then the adaptation gate they imply ... */
    double now = k->steps[0].ts;
    for (Py_ssize_t i = 1; i < b; i++) now = PYMAX(now, k->steps[i].ts);
    Py_ssize_t ntouched = 0;
    Py_ssize_t *touched = k->touched;
    for (Py_ssize_t i = 0; i < b; i++) {
        Asset *a = &k->as[k->ch[k->steps[i].slot].asset];
        if (a->mark != k->tick_no) {
            a->mark = k->tick_no;
            touched[ntouched++] = k->ch[k->steps[i].slot].asset;
        }
    }
    for (Py_ssize_t t = 0; t < ntouched; t++) {
        if (score_asset(k, touched[t], now, &notes) < 0) goto fail;
        Asset *a = &k->as[touched[t]];
        a->frozen = 0;
        if (elevated(k, a)) {
            int acc = accepted(k, a, touched[t], now, &notes);
            if (acc < 0) goto fail;
            a->frozen = !acc;
        }
    }
    for (Py_ssize_t i = 0; i < b; i++) {
        Step *s = &k->steps[i];
        const Chan *c = &k->ch[s->slot];
        if (adapt(k, s, k->as[c->asset].frozen && held(k, c), &notes) < 0) goto fail;
    }
    /* ... and the model inputs for one batched step. */
    for (Py_ssize_t i = 0; i < b; i++) {
        Step *s = &k->steps[i];
        double z = PYMAX(s->z, -Z_INPUT_CLIP);
        ((float *)k->vx.buf)[i] = (float)PYMIN(z, Z_INPUT_CLIP);
        ((float *)k->vdt.buf)[i] = (float)s->dt_model;
        memcpy((float *)k->vhb.buf + i * hidden, h + s->slot * hidden,
               (size_t)hidden * sizeof(float));
    }
    k->last_b = b;

    /* Phase 3: what the tick reports per reading. */
    scored = PyList_New(b);
    if (scored == NULL) goto fail;
    for (Py_ssize_t i = 0; i < b; i++) {
        Step *s = &k->steps[i];
        Asset *a = &k->as[k->ch[s->slot].asset];
        PyObject *expected = isnan(s->expected) ? Py_NewRef(Py_None) : PyFloat_FromDouble(s->expected);
        PyObject *score = PyFloat_FromDouble(a->score);
        if (expected == NULL || score == NULL) {
            Py_XDECREF(expected);
            Py_XDECREF(score);
            goto fail;
        }
        PyObject *argv[6] = {s->stream, s->ts_obj, s->value_obj, expected, score,
                             a->latch.active ? Py_True : Py_False};
        PyObject *item = Py_TYPE(k->scored_cls) == &RecordType && ((Record *)k->scored_cls)->cls
                             ? record_build((Record *)k->scored_cls, argv, 6)
                             : PyObject_Vectorcall(k->scored_cls, argv, 6, NULL);
        Py_DECREF(expected);
        Py_DECREF(score);
        if (item == NULL) goto fail;
        PyList_SET_ITEM(scored, i, item);
    }
    result = Py_BuildValue("(nOO)", b, scored, notes ? notes : Py_None);
    goto done;
fail:
    result = NULL;
done:
    /* b + 1: a reading that failed half-way holds references too */
    release_steps(k, b < k->capsteps ? b + 1 : b);
    Py_XDECREF(scored);
    Py_XDECREF(notes);
    k->busy = 0;
done_seq:
    Py_DECREF(seq);
    return result;
}

/* Detector._tick, after the model step: store(pred, log_var, h_new) into the channels and
 * the bound h. */
static PyObject *kernel_store(Kernel *k, PyObject *args) {
    PyObject *po, *lo, *hno;
    if (!PyArg_ParseTuple(args, "OOO", &po, &lo, &hno)) return NULL;
    if (check_free(k) < 0) return NULL;
    if (!k->bound) {
        PyErr_SetString(PyExc_RuntimeError, "Kernel.store before bind()");
        return NULL;
    }
    Py_ssize_t b = k->last_b;
    Py_buffer vp, vl, vhn;
    if (get_matrix(po, &vp, 0, "pred") < 0) return NULL;
    if (get_matrix(lo, &vl, 0, "log_var") < 0) {
        PyBuffer_Release(&vp);
        return NULL;
    }
    if (get_matrix(hno, &vhn, 0, "h_new") < 0) {
        PyBuffer_Release(&vp);
        PyBuffer_Release(&vl);
        return NULL;
    }
    Py_ssize_t hidden = k->vh.shape[1];
    PyObject *result = NULL;
    if (vp.shape[0] != b || vp.shape[1] < 1 || vl.shape[0] != b || vl.shape[1] < 1 ||
        vhn.shape[0] != b || vhn.shape[1] != hidden) {
        PyErr_Format(PyExc_ValueError, "model outputs do not fit the last tick (%zd readings)", b);
    } else {
        for (Py_ssize_t i = 0; i < b; i++) {
            Py_ssize_t slot = k->steps[i].slot;
            if (slot < 0 || slot >= k->nch || slot >= k->vh.shape[0]) continue;
            /* Trained like this: input normalised with the baseline before this reading,
             * target with the baseline after it, which is what the next tick uses. */
            k->ch[slot].pred = elem(&vp, i, 0);
            k->ch[slot].logvar = elem(&vl, i, 0);
            float *row = (float *)k->vh.buf + slot * hidden;
            for (Py_ssize_t j = 0; j < hidden; j++) row[j] = (float)elem(&vhn, i, j);
        }
        k->last_b = 0;
        result = Py_NewRef(Py_None);
    }
    PyBuffer_Release(&vp);
    PyBuffer_Release(&vl);
    PyBuffer_Release(&vhn);
    return result;
}

static void unbind(Kernel *k) {
    if (!k->bound) return;
    PyBuffer_Release(&k->vx);
    PyBuffer_Release(&k->vdt);
    PyBuffer_Release(&k->vhb);
    PyBuffer_Release(&k->vh);
    Py_CLEAR(k->slot_of);
    k->bound = 0;
}

/* bind(slot_of, x, dt, hbuf, h): the dict mapping stream names to slots, the model inputs
 * x[B,1] and dt[B,1], the gathered state hbuf[B,H] and the state matrix h[N,H] (float32,
 * C-contiguous). Held until the next bind(); arrays are replaced, not resized, to grow. */
static PyObject *kernel_bind(Kernel *k, PyObject *args) {
    PyObject *slot_of, *xo, *dto, *hbo, *ho;
    if (!PyArg_ParseTuple(args, "O!OOOO", &PyDict_Type, &slot_of, &xo, &dto, &hbo, &ho))
        return NULL;
    if (check_free(k) < 0) return NULL;
    Py_buffer vx, vdt, vhb, vh;
    if (get_matrix(xo, &vx, 1, "x") < 0) return NULL;
    if (get_matrix(dto, &vdt, 1, "dt") < 0) {
        PyBuffer_Release(&vx);
        return NULL;
    }
    if (get_matrix(hbo, &vhb, 1, "hbuf") < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vdt);
        return NULL;
    }
    if (get_matrix(ho, &vh, 1, "h") < 0) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vdt);
        PyBuffer_Release(&vhb);
        return NULL;
    }
    if (vx.shape[1] != 1 || vdt.shape[1] != 1 || vhb.shape[1] != vh.shape[1] ||
        vdt.shape[0] != vx.shape[0] || vhb.shape[0] != vx.shape[0] || vh.shape[1] < 1) {
        PyBuffer_Release(&vx);
        PyBuffer_Release(&vdt);
        PyBuffer_Release(&vhb);
        PyBuffer_Release(&vh);
        PyErr_SetString(PyExc_ValueError, "bind wants x[B,1], dt[B,1], hbuf[B,H], h[N,H]");
        return NULL;
    }
    unbind(k);
    k->vx = vx;
    k->vdt = vdt;
    k->vhb = vhb;
    k->vh = vh;
    Py_INCREF(slot_of);
    k->slot_of = slot_of;
    k->bound = 1;
    Py_RETURN_NONE;
}

/* --- state in and out (snapshot/restore, views, alerts) ------------------------------- */

static PyObject *tail_get(const Tail *t) {
    PyObject *ring = PyBytes_FromStringAndSize(t->ring ? (const char *)t->ring : "",
                                               t->ring ? t->len * (Py_ssize_t)sizeof(float) : 0);
    if (ring == NULL) return NULL;
    return Py_BuildValue("(NnLLddd)", ring, t->pos, t->count, t->since_refresh, t->q50, t->q90,
                         t->q99);
}

static int conv_count(PyObject *obj, void *out) {
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) return 0;
    if (overflow > 0 || v > COUNT_LIMIT) v = COUNT_LIMIT;
    if (overflow < 0 || v < -COUNT_LIMIT) v = -COUNT_LIMIT;
    *(long long *)out = v;
    return 1;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static int tail_set(Tail *t, PyObject *state) {
    Py_buffer ring;
    Py_ssize_t pos;
    long long count, since;
    double q50, q90, q99;
    if (!PyArg_ParseTuple(state, "y*nO&O&ddd", &ring, &pos, conv_count, &count, conv_count,
                          &since, &q50, &q90, &q99))
        return -1;
    Py_ssize_t len = ring.len / (Py_ssize_t)sizeof(float);
    if (ring.len % (Py_ssize_t)sizeof(float) || len > TAIL_SIZE) {
        PyBuffer_Release(&ring);
        PyErr_SetString(PyExc_ValueError, "tail ring does not fit");
        return -1;
    }
    const float *src = (const float *)ring.buf;
    for (Py_ssize_t i = 0; i < len; i++) {
        if (!isfinite(src[i])) {
            PyBuffer_Release(&ring);
            PyErr_SetString(PyExc_ValueError, "tail ring holds a non-finite value");
            return -1;
        }
    }
    if (tail_alloc(t) < 0) {
        PyBuffer_Release(&ring);
        return -1;
    }
    memcpy(t->ring, src, (size_t)len * sizeof(float));
    memcpy(t->sorted, src, (size_t)len * sizeof(float));
    PyBuffer_Release(&ring);
    qsort(t->sorted, (size_t)len, sizeof(float), cmp_float);
    t->len = len;
    t->pos = ((pos % TAIL_SIZE) + TAIL_SIZE) % TAIL_SIZE;
    t->count = count;
    t->since_refresh = since;
    t->q50 = q50;
    t->q90 = q90;
    t->q99 = q99;
    return 0;
}

static PyObject *recent_get(const double *recent) {
    PyObject *t = PyTuple_New(BURST_WINDOW);
    if (t == NULL) return NULL;
    for (int i = 0; i < BURST_WINDOW; i++) {
        PyObject *v = PyFloat_FromDouble(recent[i]);
        if (v == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static int recent_set(double *recent, PyObject *obj) {
    PyObject *seq = PySequence_Fast(obj, "recent must be a sequence");
    if (seq == NULL) return -1;
    if (PySequence_Fast_GET_SIZE(seq) != BURST_WINDOW) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "recent must hold 10 values");
        return -1;
    }
    double tmp[BURST_WINDOW];
    for (int i = 0; i < BURST_WINDOW; i++) {
        tmp[i] = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (tmp[i] == -1.0 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    memcpy(recent, tmp, sizeof(tmp));
    return 0;
}

static Py_ssize_t index_arg(PyObject *arg, Py_ssize_t limit, const char *what) {
    Py_ssize_t i = PyLong_AsSsize_t(arg);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0 || i >= limit) {
        PyErr_Format(PyExc_IndexError, "no such %s", what);
        return -1;
    }
    return i;
}

/* The _Channel fields, in engine.py's _CHANNEL_FIELDS order, then recent and both tails. */
static PyObject *kernel_get_channel(Kernel *k, PyObject *arg) {
    Py_ssize_t i = index_arg(arg, k->nch, "channel");
    if (i < 0) return NULL;
    Chan *c = &k->ch[i];
    PyObject *recent = recent_get(c->recent);
    if (recent == NULL) return NULL;
    PyObject *tail = tail_get(&c->tail);
    if (tail == NULL) {
        Py_DECREF(recent);
        return NULL;
    }
    PyObject *tail_medium = tail_get(&c->tail_medium);
    if (tail_medium == NULL) {
        Py_DECREF(recent);
        Py_DECREF(tail);
        return NULL;
    }
    return Py_BuildValue("(ddLdddddd" "NdLLddddd" "NdLdd" "ddN" "NNN)", c->mean, c->var, c->n,
                         c->last_ts, c->interval, c->pred, c->logvar, c->calib, c->slow,
                         PyBool_FromLong(c->drifting), c->q, c->reason, c->run, c->run_max,
                         c->last_value, c->last_expected, c->band_low, c->band_high,
                         PyBool_FromLong(c->fresh), c->short_, c->n_raw, c->level, c->surprise,
                         c->medium, c->level_medium, PyBool_FromLong(c->held), recent, tail,
                         tail_medium);
}

static PyObject *kernel_set_channel(Kernel *k, PyObject *args) {
    PyObject *idx, *state;
    if (!PyArg_ParseTuple(args, "OO!", &idx, &PyTuple_Type, &state)) return NULL;
    if (check_free(k) < 0) return NULL;
    Py_ssize_t i = index_arg(idx, k->nch, "channel");
    if (i < 0) return NULL;
    Chan c = k->ch[i];
    PyObject *recent, *tail, *tail_medium;
    int drifting, fresh, is_held;
    if (!PyArg_ParseTuple(state, "ddO&dddddd" "pdO&O&ddddd" "pdO&dd" "ddp" "OOO", &c.mean,
                          &c.var, conv_count, &c.n, &c.last_ts, &c.interval, &c.pred, &c.logvar,
                          &c.calib, &c.slow, &drifting, &c.q, conv_count, &c.reason, conv_count,
                          &c.run, &c.run_max, &c.last_value, &c.last_expected, &c.band_low,
                          &c.band_high, &fresh, &c.short_, conv_count, &c.n_raw, &c.level,
                          &c.surprise, &c.medium, &c.level_medium, &is_held, &recent, &tail,
                          &tail_medium))
        return NULL;
    c.drifting = drifting;
    c.fresh = fresh;
    c.held = is_held;
    if (recent_set(c.recent, recent) < 0) return NULL;
    /* None: keep the tail as it is */
    if (tail != Py_None && tail_set(&k->ch[i].tail, tail) < 0) return NULL;
    if (tail_medium != Py_None && tail_set(&k->ch[i].tail_medium, tail_medium) < 0) return NULL;
    c.tail = k->ch[i].tail;
    c.tail_medium = k->ch[i].tail_medium;
    k->ch[i] = c;
    Py_RETURN_NONE;
}

/* The _Asset fields and its latch, in engine.py's _ASSET_FIELDS + _LATCH_FIELDS order. */
static PyObject *kernel_get_asset(Kernel *k, PyObject *arg) {
    Py_ssize_t i = index_arg(arg, k->nas, "asset");
    if (i < 0) return NULL;
    Asset *a = &k->as[i];
    return Py_BuildValue("(ddNdNLLd)", a->score, a->raised_ts,
                         PyBool_FromLong(a->accepted), a->max_score,
                         PyBool_FromLong(a->latch.active), a->latch.above, a->latch.below,
                         a->latch.cooldown_until);
}

static PyObject *kernel_set_asset(Kernel *k, PyObject *args) {
    PyObject *idx, *state;
    if (!PyArg_ParseTuple(args, "OO!", &idx, &PyTuple_Type, &state)) return NULL;
    if (check_free(k) < 0) return NULL;
    Py_ssize_t i = index_arg(idx, k->nas, "asset");
    if (i < 0) return NULL;
    Asset a = k->as[i];
    int acc, active;
    if (!PyArg_ParseTuple(state, "ddpdpO&O&d", &a.score, &a.raised_ts, &acc, &a.max_score,
                          &active, conv_count, &a.latch.above, conv_count, &a.latch.below,
                          &a.latch.cooldown_until))
        return NULL;
    a.accepted = acc;
    a.latch.active = active;
    k->as[i] = a;
    Py_RETURN_NONE;
}

static PyObject *kernel_counts(Kernel *k, PyObject *noargs) {
    (void)noargs;
    return Py_BuildValue("(nn)", k->nch, k->nas);
}

/* What Detector.channel_views needs of every channel, in slot order: mean, var,
 * last_expected, n, and its asset's score and latch. One call for the per-second status
 * snapshot instead of a full state trade per stream (which copies both tails). */
static PyObject *kernel_views(Kernel *k, PyObject *noargs) {
    (void)noargs;
    PyObject *list = PyList_New(k->nch);
    if (list == NULL) return NULL;
    for (Py_ssize_t i = 0; i < k->nch; i++) {
        const Chan *c = &k->ch[i];
        const Asset *a = &k->as[c->asset];
        PyObject *row = Py_BuildValue("(dddLdN)", c->mean, c->var, c->last_expected, c->n,
                                      a->score, PyBool_FromLong(a->latch.active));
        if (row == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, row);
    }
    return list;
}

static PyMethodDef kernel_methods[] = {
    {"views", (PyCFunction)kernel_views, METH_NOARGS, "views() -> [(mean, var, ...), ...]"},
    {"add_asset", (PyCFunction)kernel_add_asset, METH_NOARGS, "add_asset() -> index"},
    {"add_channel", (PyCFunction)kernel_add_channel, METH_O, "add_channel(asset) -> slot"},
    {"bind", (PyCFunction)kernel_bind, METH_VARARGS, "bind(slot_of, x, dt, hbuf, h)"},
    {"tick", (PyCFunction)kernel_tick, METH_O,
     "tick(readings) -> None | False | int | (b, scored, notes)"},
    {"store", (PyCFunction)kernel_store, METH_VARARGS, "store(pred, log_var, h_new)"},
    {"get_channel", (PyCFunction)kernel_get_channel, METH_O, "get_channel(slot) -> tuple"},
    {"set_channel", (PyCFunction)kernel_set_channel, METH_VARARGS, "set_channel(slot, tuple)"},
    {"get_asset", (PyCFunction)kernel_get_asset, METH_O, "get_asset(index) -> tuple"},
    {"set_asset", (PyCFunction)kernel_set_asset, METH_VARARGS, "set_asset(index, tuple)"},
    {"counts", (PyCFunction)kernel_counts, METH_NOARGS, "counts() -> (channels, assets)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject KernelType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.detector._kernel.Kernel",
    .tp_basicsize = sizeof(Kernel),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The detector's numeric state and per-reading arithmetic (see engine.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)kernel_init,
    .tp_dealloc = (destructor)kernel_dealloc,
    .tp_methods = kernel_methods,
};

/* --- replay's output ---------------------------------------------------------------------- */

/* format_expected(scored) -> [f"{s.expected:.6g}" or "" for None]: replay's expected columns.
 * Here because this is the package's only C and formatting them was an eighth of a replayed
 * SKAB row. Same text as the f-string: a float goes through PyOS_double_to_string(v, 'g', 6),
 * which is what float.__format__ does for ".6g"; anything else through format() itself. */
static PyObject *format_expected(PyObject *module, PyObject *arg) {
    (void)module;
    static PyObject *s_expected, *s_spec, *s_empty;
    if (s_expected == NULL) {
        s_expected = PyUnicode_InternFromString("expected");
        s_spec = PyUnicode_InternFromString(".6g");
        s_empty = PyUnicode_InternFromString("");
        if (!s_expected || !s_spec || !s_empty) return NULL;
    }
    PyObject *seq = PySequence_Tuple(arg);
    if (seq == NULL) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *e = PyObject_GetAttr(PyTuple_GET_ITEM(seq, i), s_expected);
        if (e == NULL) goto fail;
        PyObject *text;
        if (e == Py_None) {
            text = Py_NewRef(s_empty);
        } else if (PyFloat_CheckExact(e)) {
            char *buf = PyOS_double_to_string(PyFloat_AS_DOUBLE(e), 'g', 6, 0, NULL);
            text = buf ? PyUnicode_FromString(buf) : NULL;
            PyMem_Free(buf);
        } else {
            text = PyObject_Format(e, s_spec);
        }
        Py_DECREF(e);
        if (text == NULL) goto fail;
        PyList_SET_ITEM(out, i, text);
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"format_expected", format_expected, METH_O,
     "format_expected(scored) -> list of f'{s.expected:.6g}', '' for None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef kernel_module = {
    PyModuleDef_HEAD_INIT, "_kernel", "The compiled detector core (mirrors engine.py).", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__kernel(void) {
    HOLD_SURPRISE = log(100.0);
    if (PyType_Ready(&KernelType) < 0 || PyType_Ready(&RecordType) < 0) return NULL;
    PyObject *m = PyModule_Create(&kernel_module);
    if (m == NULL) return NULL;
    Py_INCREF(&KernelType);
    if (PyModule_AddObject(m, "Kernel", (PyObject *)&KernelType) < 0) {
        Py_DECREF(&KernelType);
        Py_DECREF(m);
        return NULL;
    }
#ifdef KERNEL_SOURCE_SHA256
    /* build.py stamps the hash of this file: engine.py ignores a build of another version. */
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", KERNEL_SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    Py_INCREF(&RecordType);
    if (PyModule_AddObject(m, "Record", (PyObject *)&RecordType) < 0) {
        Py_DECREF(&RecordType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
