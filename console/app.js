// waguard console
