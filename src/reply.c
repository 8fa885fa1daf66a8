/* reply — see include/reply.h */
#include "reply.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* The room a reply's top starts with when it is an array: a record's fields and a
 * transaction's few replies fit (a redisReply is 48 bytes). */
#define REPLY_FIRST_ROOM 1024
/* A block after the first: at least this, or what one piece needs. */
#define REPLY_MORE_ROOM 4096

/* A further block of a reply, after the top's own room. */
struct block {
    struct block *next;
    max_align_t room[];
};

/* The top of a reply: the blocks it owns, the free room left in the newest, then the
 * redisReply hiredis hands to the callback, then the first room. */
struct top {
    struct block *more;          /* blocks after the first, newest first */
    unsigned char *at, *end;     /* free room in the newest block */
    redisReply reply;
    max_align_t room[];
};

/* Every piece starts where a redisReply may (strings included, so that the next piece
 * is aligned too). */
#define REPLY_ALIGN _Alignof(redisReply)

static size_t rounded(size_t n)
{
    return (n + (REPLY_ALIGN - 1)) & ~(REPLY_ALIGN - 1);
}

static struct top *top_new(size_t room)
{
    room = rounded(room);
    struct top *t = malloc(sizeof *t + room);
    if (!t)
        return NULL;
    t->more = NULL;
    t->at = (unsigned char *)t->room;
    t->end = t->at + room;
    t->reply = (redisReply){ 0 };
    return t;
}

static struct top *top_of(redisReply *r)
{
    return (struct top *)(void *)((char *)r - offsetof(struct top, reply));
}

/* n bytes of t's room, aligned (not cleared); NULL when out of memory. */
static void *take(struct top *t, size_t n)
{
    n = rounded(n ? n : 1);
    if ((size_t)(t->end - t->at) < n) {
        size_t room = n > REPLY_MORE_ROOM ? n : REPLY_MORE_ROOM;
        struct block *b = malloc(sizeof *b + room);
        if (!b)
            return NULL;
        b->next = t->more;
        t->more = b;
        t->at = (unsigned char *)b->room;
        t->end = t->at + room;
    }
    void *p = t->at;
    t->at += n;
    return p;
}

/* The object of type a task makes (a string's type is the task's: status, error or
 * string; a nil bulk string or array is NIL): the top itself for the reply's first task
 * (room: what it will hold besides), else a piece of its top's room, put in its place
 * among the parent's elements.  *top: the top it belongs to. */
static redisReply *object_for(const redisReadTask *task, int type, size_t room, struct top **top)
{
    if (!task->parent) {
        if (!(*top = top_new(room)))
            return NULL;
        (*top)->reply.type = type;
        return &(*top)->reply;
    }
    const redisReadTask *root = task->parent;
    while (root->parent)
        root = root->parent;
    redisReply *parent = task->parent->obj;
    if (!root->obj || !parent || parent->type != REDIS_REPLY_ARRAY || task->idx < 0 ||
        (size_t)task->idx >= parent->elements)
        return NULL;                 /* not a tree hiredis builds */
    *top = top_of(root->obj);
    redisReply *r = take(*top, sizeof *r);
    if (!r)
        return NULL;
    *r = (redisReply){ .type = type };
    parent->element[task->idx] = r;
    return r;
}

static void free_object(void *obj);

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    struct top *t;
    redisReply *r = object_for(task, task->type, len + 1, &t);
    char *buf = r ? take(t, len + 1) : NULL;
    if (!buf) {
        if (r && !task->parent)
            free_object(r);          /* a top the reader never saw (an element's is freed with its top) */
        return NULL;
    }
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return r;
}

static void *create_array(const redisReadTask *task, int elements)
{
    struct top *t;
    size_t n = elements > 0 ? (size_t)elements : 0;
    redisReply *r = object_for(task, REDIS_REPLY_ARRAY, n ? REPLY_FIRST_ROOM + n * sizeof(redisReply *) : 0, &t);
    if (!r)
        return NULL;
    /* cleared: an element not yet read is NULL, as hiredis's calloc leaves it */
    if (n && !(r->element = take(t, n * sizeof *r->element))) {
        if (!task->parent)
            free_object(r);          /* a top the reader never saw (an element's is freed with its top) */
        return NULL;
    }
    if (n)
        memset(r->element, 0, n * sizeof *r->element);
    r->elements = n;
    return r;
}

static void *create_integer(const redisReadTask *task, long long value)
{
    struct top *t;
    redisReply *r = object_for(task, REDIS_REPLY_INTEGER, 0, &t);
    if (r)
        r->integer = value;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    struct top *t;
    return object_for(task, REDIS_REPLY_NIL, 0, &t);
}

/* hiredis frees only a reply's top (the reply it handed out, or one it gave up on). */
static void free_object(void *obj)
{
    if (!obj)
        return;
    struct top *t = top_of(obj);
    for (struct block *b = t->more, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(t);
}

static const redisReplyObjectFunctions functions = {
    .createString = create_string,
    .createArray = create_array,
    .createInteger = create_integer,
    .createNil = create_nil,
    .freeObject = free_object,
};

redisReplyObjectFunctions *reply_functions(void)
{
    return (redisReplyObjectFunctions *)&functions;     /* hiredis only reads it */
}
