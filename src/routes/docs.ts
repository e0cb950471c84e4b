// The API's own description: the OpenAPI document (/openapi.json), built from the routes'
// schemas, and Swagger UI (/docs). Called with the app itself (not through `register`, which would
// keep the document to a context of its own) and before the other routes: it collects them as they
// are added.
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance } from 'fastify';
import { USER_ID_HEADER } from '../http/auth.js';
import { setPageHeaders } from '../http/page-headers.js';

export async function docsRoutes(app: FastifyInstance): Promise<void> {
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'couponrush',
        version: '0.1.0',
        description: 'First-come-first-served coupon issuance. Every error is RFC 9457 application/problem+json with a stable `code`.',
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT (users) or the admin token (admin routes)' },
          userIdHeader: { type: 'apiKey', in: 'header', name: USER_ID_HEADER, description: 'only with AUTH_MODE=header' },
        },
      },
    },
  });
  // Swagger UI is a page of this origin like the console: the same headers, on every file of it.
  await app.register(async (docs) => {
    docs.addHook('onRequest', async (_request, reply) => setPageHeaders(reply));
    await docs.register(swaggerUi, { routePrefix: '/docs' });
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
}
