/* reply — the objects hiredis makes of Redis's replies on waguard's connection, made in
 * a few blocks a reply instead of two allocations an element.
 *
 * hiredis's own functions (hiredis 0.14) make every element of a reply with calloc, its
 * string with malloc, an array's element vector with calloc, and free them one by one
 * after the callback: a gate decision's transaction (MULTI's +OK, two +QUEUED, EXEC's
 * array holding a contact mapping and a record's ten fields) is about thirty blocks
 * made and freed.  These functions make the very same tree (redisReply of hiredis.h:
 * the same type, integer, len, str NUL-terminated, elements, element in order) in
 * blocks that belong to the reply's top, so that freeing the top frees the whole of it
 * at once: the common reply is one block.
 *
 * What it asks of the code that reads replies (store.h says it too): a reply lives only
 * inside its callback, and only its top is ever freed (hiredis does that, through
 * freeObject); an element is never freed, kept or handed to freeReplyObject on its own.
 * A reply kept beyond its callback is copied (store.c: reply_dup, with malloc, freed
 * with freeReplyObject). */
#ifndef WAGUARD_REPLY_H
#define WAGUARD_REPLY_H

#include <hiredis/hiredis.h>

/* The functions, for a reader: reader->fn = reply_functions().  hiredis only reads
 * through the pointer. */
redisReplyObjectFunctions *reply_functions(void);

#endif
