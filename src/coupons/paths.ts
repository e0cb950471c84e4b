// Route paths that more than the routes module needs (protections and metrics attach to the issue
// route by its pattern). A module of its own, below both, so that none of them imports another's
// module just for a constant.

/** The issue hot path. */
export const ISSUE_ROUTE_URL = '/coupons/:id/issues';
