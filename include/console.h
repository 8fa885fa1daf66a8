/* console — the operator console in the browser, /console/: plain HTML, CSS and
 * JavaScript modules built into the binary (console/ in the source tree; the Makefile
 * compiles them in), served with a strict Content-Security-Policy.  It signs in with a
 * token kept in the tab's session storage and uses the documented admin API only. */
#ifndef WAGUARD_CONSOLE_H
#define WAGUARD_CONSOLE_H

#include "request.h"

void console_serve(struct request *r);

#endif
