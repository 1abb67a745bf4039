// /docs: Swagger UI over the controller's and the agent's OpenAPI documents, from this server only
// (no validator badge: it would ask validator.swagger.io; no "try it out" across origins).
(() => {
  const el = document.getElementById('swagger-ui');
  if (!el || typeof SwaggerUIBundle !== 'function') return;
  SwaggerUIBundle({
    dom_id: '#swagger-ui',
    urls: JSON.parse(el.dataset.urls || '[]'),
    'urls.primaryName': 'Controller API',
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: 'StandaloneLayout',
    validatorUrl: null,
    deepLinking: false,
    queryConfigEnabled: false,
    withCredentials: true,
  });
})();
