"""`repobox demo`: a throwaway Redis and HTTPS git remote, one job run by the real worker."""
