/* waguardctl — placeholder until the command line is written. */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "waguardctl: not built yet\n");
    return 2;
}
