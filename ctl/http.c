/* http — see ctl/ctl.h
 *
 * One request on a new connection ("Connection: close"), on plain sockets so that a unix
 * socket works exactly as TCP does; every step (connect, write, read) shares one deadline.
 * The answer is framed by Content-Length, by chunked transfer coding, or by the close. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* An answer larger than this is not waguard's. */
#define REPLY_MAX (64u << 20)

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int time_left(long long deadline)
{
    long long left = deadline - mono_ms();
    return left > 0 ? (int)left : 0;
}

/* Waits until fd is ready for events; returns 0, or -1 with errno (ETIMEDOUT when the
 * deadline passed). */
static int wait_fd(int fd, short events, long long deadline)
{
    for (;;) {
        struct pollfd p = { .fd = fd, .events = events };
        int n = poll(&p, 1, time_left(deadline));
        if (n > 0)
            return 0;
        if (n == 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        if (errno != EINTR)
            return -1;
    }
}

/* A non-blocking connect on fd to sa, finished within the deadline.  Returns 0 or -1
 * with errno. */
static int connect_by(int fd, const struct sockaddr *sa, socklen_t salen, long long deadline)
{
    if (connect(fd, sa, salen) == 0)
        return 0;
    if (errno != EINPROGRESS && errno != EINTR)
        return -1;
    if (wait_fd(fd, POLLOUT, deadline) != 0)
        return -1;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
        return -1;
    if (soerr != 0) {
        errno = soerr;
        return -1;
    }
    return 0;
}

/* Connects to listen; fills host (the Host header).  Returns the socket, or -1 with err. */
static int dial(const char *listen, char *host_hdr, size_t hostlen, long long deadline, char *err, size_t errlen)
{
    if (strncmp(listen, "unix:", 5) == 0) {
        const char *path = listen + 5;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (path[0] == '\0' || strlen(path) >= sizeof sa.sun_path) {
            snprintf(err, errlen, "'%s' is not a unix socket path waguardctl can connect to", listen);
            return -1;
        }
        memcpy(sa.sun_path, path, strlen(path) + 1);
        snprintf(host_hdr, hostlen, "localhost");
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0 || connect_by(fd, (struct sockaddr *)&sa, sizeof sa, deadline) != 0) {
            snprintf(err, errlen, "cannot connect to %s: %s", listen, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        return fd;
    }
    char host[256];
    int port;
    if (config_split_hostport(listen, host, sizeof host, &port) != 0) {
        snprintf(err, errlen, "'%s' is not host:port or unix:/path", listen);
        return -1;
    }
    /* waguard listening on every address is reached on the loopback one. */
    if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    else if (strcmp(host, "::") == 0)
        snprintf(host, sizeof host, "::1");
    snprintf(host_hdr, hostlen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    char service[16];
    snprintf(service, sizeof service, "%d", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(gai));
        return -1;
    }
    int fd = -1, last = ECONNREFUSED;
    for (const struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect_by(fd, a->ai_addr, a->ai_addrlen, deadline) != 0) {
            last = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen, "cannot connect to %s: %s", listen, strerror(last));
    return fd;
}

static int send_all(int fd, const char *p, size_t n, long long deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (wait_fd(fd, POLLOUT, deadline) != 0)
                return -1;
            continue;
        }
        return -1;
    }
    return 0;
}

/* Reads until the peer closes.  Returns 0 with *out (malloc'd, NUL-terminated), or -1
 * with errno (EFBIG: larger than REPLY_MAX). */
static int recv_all(int fd, long long deadline, char **out, size_t *outlen)
{
    size_t cap = 16384, n = 0;
    char *buf = malloc(cap);
    if (!buf)
        return -1;
    for (;;) {
        if (cap - n < 4096) {
            if (cap >= REPLY_MAX) {
                free(buf);
                errno = EFBIG;
                return -1;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                return -1;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t r = recv(fd, buf + n, cap - n - 1, 0);
        if (r > 0) {
            n += (size_t)r;
            continue;
        }
        if (r == 0)
            break;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (wait_fd(fd, POLLIN, deadline) != 0) {
                free(buf);
                return -1;
            }
            continue;
        }
        /* a reset after the whole answer arrived still leaves a usable answer */
        if (errno == ECONNRESET && n > 0)
            break;
        free(buf);
        return -1;
    }
    buf[n] = '\0';
    *out = buf;
    *outlen = n;
    return 0;
}

/* The value of header name in the head [h, end), into val; returns true when found. */
static bool header(const char *h, const char *end, const char *name, char *val, size_t vlen)
{
    size_t nl = strlen(name);
    for (const char *line = h; line < end;) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        if (!eol)
            eol = end;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            size_t l = (size_t)(ve - v) < vlen - 1 ? (size_t)(ve - v) : vlen - 1;
            memcpy(val, v, l);
            val[l] = '\0';
            return true;
        }
        line = eol + 1;
    }
    return false;
}

/* Decodes a chunked body in place.  Returns its length, or -1 when malformed. */
static long dechunk(char *p, size_t n)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *eol = memchr(p + in, '\n', n - in);
        if (!eol)
            return -1;
        char *end;
        unsigned long sz = strtoul(p + in, &end, 16);
        if (end == p + in)
            return -1;
        in = (size_t)(eol - p) + 1;
        if (sz == 0)
            return (long)out;
        if (sz > n - in)
            return -1;
        memmove(p + out, p + in, sz);
        out += sz;
        in += sz;
        if (in < n && p[in] == '\r')
            in++;
        if (in < n && p[in] == '\n')
            in++;
    }
}

/* Splits a raw answer into *rep.  Returns 0, or -1 with err. */
static int parse_reply(char *raw, size_t n, struct http_reply *rep, char *err, size_t errlen)
{
    char *sep = strstr(raw, "\r\n\r\n");
    size_t seplen = 4;
    if (!sep) {
        sep = strstr(raw, "\n\n");
        seplen = 2;
    }
    int major, minor, status;
    if (!sep || sscanf(raw, "HTTP/%d.%d %d", &major, &minor, &status) != 3 || status < 100 || status > 999) {
        snprintf(err, errlen, "the answer is not HTTP (%zu bytes)", n);
        return -1;
    }
    char *body = sep + seplen;
    size_t blen = n - (size_t)(body - raw);
    char v[64];
    if (header(raw, sep, "Transfer-Encoding", v, sizeof v) && strcasecmp(v, "chunked") == 0) {
        long l = dechunk(body, blen);
        if (l < 0) {
            snprintf(err, errlen, "the answer's chunked body is cut short or malformed");
            return -1;
        }
        blen = (size_t)l;
    } else if (header(raw, sep, "Content-Length", v, sizeof v)) {
        char *end;
        unsigned long long cl = strtoull(v, &end, 10);
        if (*end || end == v) {
            snprintf(err, errlen, "the answer's Content-Length '%s' is not a number", v);
            return -1;
        }
        if (cl > blen) {
            snprintf(err, errlen, "the answer was cut short (%zu of %llu bytes)", blen, cl);
            return -1;
        }
        blen = (size_t)cl;
    }
    rep->status = status;
    rep->len = blen;
    rep->body = malloc(blen + 1);
    if (!rep->body) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(rep->body, body, blen);
    rep->body[blen] = '\0';
    return 0;
}

int http_request(const char *listen, const char *token, const char *method, const char *target,
                 const char *body, long timeout_ms, struct http_reply *rep, char *err, size_t errlen)
{
    memset(rep, 0, sizeof *rep);
    long long deadline = mono_ms() + timeout_ms;
    char host[300];
    int fd = dial(listen, host, sizeof host, deadline, err, errlen);
    if (fd < 0)
        return -1;
    size_t blen = body ? strlen(body) : 0;
    size_t tlen = strlen(token ? token : "");
    size_t cap = strlen(method) + strlen(target) + strlen(host) + tlen + 512;
    char *head = malloc(cap);
    if (!head) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int hl = snprintf(head, cap,
                      "%s %s HTTP/1.1\r\n"
                      "Host: %s\r\n"
                      "User-Agent: waguardctl/%s\r\n"
                      "Accept: application/json\r\n"
                      "Connection: close\r\n"
                      "%s%s%s"
                      "%s",
                      method, target, host, WAGUARD_VERSION,
                      token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "",
                      body ? "Content-Type: application/json\r\n" : "");
    if (body || strcmp(method, "POST") == 0)
        hl += snprintf(head + hl, cap - (size_t)hl, "Content-Length: %zu\r\n", blen);
    hl += snprintf(head + hl, cap - (size_t)hl, "\r\n");
    int rc = send_all(fd, head, (size_t)hl, deadline);
    free(head);
    if (rc == 0 && blen > 0)
        rc = send_all(fd, body, blen, deadline);
    if (rc != 0) {
        snprintf(err, errlen, "cannot send the request to %s: %s", listen,
                 errno == ETIMEDOUT ? "no progress within the time limit" : strerror(errno));
        close(fd);
        return -1;
    }
    char *raw = NULL;
    size_t n = 0;
    rc = recv_all(fd, deadline, &raw, &n);
    int saved = errno;
    close(fd);
    if (rc != 0) {
        if (saved == ETIMEDOUT)
            snprintf(err, errlen, "waguard at %s did not answer %s %s within %ld ms", listen, method, target,
                     timeout_ms);
        else if (saved == EFBIG)
            snprintf(err, errlen, "the answer to %s %s is larger than %u bytes", method, target, REPLY_MAX);
        else
            snprintf(err, errlen, "reading the answer from %s: %s", listen, strerror(saved));
        return -1;
    }
    if (n == 0) {
        free(raw);
        snprintf(err, errlen, "waguard at %s closed the connection without answering %s %s", listen, method,
                 target);
        return -1;
    }
    rc = parse_reply(raw, n, rep, err, errlen);
    free(raw);
    return rc;
}

void http_reply_free(struct http_reply *rep)
{
    free(rep->body);
    rep->body = NULL;
    rep->len = 0;
}

int http_encode(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                     *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (o + (plain ? 1 : 3) >= outlen)
            return -1;
        if (plain) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    if (o >= outlen)
        return -1;
    out[o] = '\0';
    return 0;
}
