-- Argo CD health of a Kurable Entity (resource.customizations.health.kurable.dev_Entity).
hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick the entity up"
  return hs
end
if status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. obj.metadata.generation
  return hs
end
if status.phase == "Ready" then
  hs.status = "Healthy"
  if status.version ~= nil then
    hs.message = "Ready at version " .. status.version
  else
    hs.message = "Ready"
  end
elseif status.phase == "Invalid" then
  hs.status = "Degraded"
  hs.message = "Invalid: " .. (status.message or "see kubectl describe")
else
  hs.status = "Progressing"
  hs.message = status.message or status.phase
end
return hs
