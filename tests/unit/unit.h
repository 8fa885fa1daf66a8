/* unit — the runner every C unit test shares. */
#ifndef WAGUARD_UNIT_H
#define WAGUARD_UNIT_H

#include <check.h>
#include <stdlib.h>

/* Runs the suite and turns its failures into the exit status. */
static inline int unit_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
